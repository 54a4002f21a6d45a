import type { Any } from '@sekisho/proto/google/protobuf/any';

/** One named xDS resource, already packed. */
export interface Resource {
  name: string;
  resource: Any;
}

/** What a compiled gateway definition serves: type URL to the complete set of that type. */
export type ResourcesByType = Map<string, Resource[]>;
