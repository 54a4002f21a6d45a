// What a gateway definition file imports. Type-only, so a definition module stays cheap to
// load; the compile pipeline lives in ./definition/load.
import type { GatewayDefinitionInput } from './definition/schema';

export type { GatewayDefinition, GatewayDefinitionInput } from './definition/schema';

/** Returns the definition unchanged; it exists for the types (autocompletion, checking). */
export function defineGateway(def: GatewayDefinitionInput): GatewayDefinitionInput {
  return def;
}
