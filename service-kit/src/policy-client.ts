import { type ClientDuplexStream, status as grpcStatus } from '@grpc/grpc-js';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { AggregatedDiscoveryServiceClient } from '@sekisho/proto/envoy/service/discovery/v3/ads';
import {
  type DiscoveryRequest,
  type DiscoveryResponse,
  Resource,
} from '@sekisho/proto/envoy/service/discovery/v3/discovery';
import { nodeViewKey } from './contract';
import type { Logger } from './logger';
import { filesStamp, type XdsChannel, xdsChannelCredentials } from './xds-channel';

const resourceWrapperType = 'type.googleapis.com/envoy.service.discovery.v3.Resource';

type AdsStream = ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;

export interface PolicySubscription<T = unknown> {
  close(): void;
  /** The last policy `apply` accepted, kept across NACKs and reconnects. */
  current(): { version: string; policy: T } | undefined;
}

export interface PolicySubscriptionOptions<T> {
  /** The control plane's ADS address, host:port. */
  address: string;
  /**
   * How to reach it (from `resolveXdsChannel`): mutual TLS, or plaintext. Omitted: plaintext,
   * and only to a loopback address (anything else throws).
   */
  channel?: XdsChannel;
  nodeId: string;
  /** The control-plane view to ask for (node metadata `sekisho.view`, see contract.ts). */
  view?: string;
  typeUrl: string;
  resourceName: string;
  decode: (bytes: Uint8Array) => T;
  /** Installs the policy. Throwing rejects it: the control plane gets a NACK with the message. */
  apply: (policy: T, version: string) => void;
  logger: Logger;
  /** Back-off bounds for reconnecting, in ms. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * A state-of-the-world ADS client for one policy resource of Sekisho's own
 * services. It keeps the last accepted policy across disconnects and reconnects
 * forever with capped, jittered exponential back-off; every response of its type
 * is ACKed or NACKed on the stream it came from, echoing that response's nonce.
 */
export function subscribePolicy<T>(opts: PolicySubscriptionOptions<T>): PolicySubscription<T> {
  const channel: XdsChannel = opts.channel ?? { address: opts.address, allowInsecure: false };
  // Rotated client certificate files are picked up at the next reconnect.
  const stampNow = () =>
    channel.tls ? filesStamp([channel.tls.caFile, channel.tls.certFile, channel.tls.keyFile]) : '';
  const newClient = () => {
    const { credentials, options } = xdsChannelCredentials(channel);
    return new AggregatedDiscoveryServiceClient(channel.address, credentials, {
      'grpc.keepalive_time_ms': 30_000,
      ...options,
    });
  };
  let stamp = stampNow();
  let client = newClient();
  const minBackoff = opts.minBackoffMs ?? 250;
  const maxBackoff = opts.maxBackoffMs ?? 10_000;
  let accepted: { version: string; policy: T } | undefined;
  let stream: AdsStream | undefined;
  let closed = false;
  let backoff = minBackoff;
  let retryTimer: NodeJS.Timeout | undefined;

  const request = (fields: Partial<DiscoveryRequest>): DiscoveryRequest => ({
    versionInfo: accepted?.version ?? '',
    resourceNames: [opts.resourceName],
    resourceLocators: [],
    typeUrl: opts.typeUrl,
    responseNonce: '',
    ...fields,
  });

  const extract = (response: DiscoveryResponse): Uint8Array | undefined => {
    for (const any of response.resources) {
      if (any.typeUrl === opts.typeUrl) return any.value;
      if (any.typeUrl === resourceWrapperType) {
        const wrapped = Resource.decode(any.value);
        if (wrapped.name === opts.resourceName && wrapped.resource?.typeUrl === opts.typeUrl) {
          return wrapped.resource.value;
        }
      }
    }
    return undefined;
  };

  const onResponse = (call: AdsStream, response: DiscoveryResponse) => {
    backoff = minBackoff;
    // ADS multiplexes types; this client asked for one and has nothing to say about others.
    if (response.typeUrl !== opts.typeUrl) return;
    const log = opts.logger.child({ category: 'technical', type_url: opts.typeUrl, version: response.versionInfo });
    try {
      const bytes = extract(response);
      if (!bytes) throw new Error(`response has no resource named ${opts.resourceName}`);
      const policy = opts.decode(bytes);
      opts.apply(policy, response.versionInfo);
      accepted = { version: response.versionInfo, policy };
      log.info({ event_type: 'policy_applied' }, 'policy applied');
      call.write(request({ versionInfo: response.versionInfo, responseNonce: response.nonce }));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      log.error(
        { event_type: 'policy_rejected', error_details: message },
        'policy rejected; keeping the last good one',
      );
      // A NACK repeats the version still in force; error_detail is what marks it as a NACK.
      call.write(
        request({
          responseNonce: response.nonce,
          errorDetail: { code: grpcStatus.INVALID_ARGUMENT, message, details: [] },
        }),
      );
    }
  };

  const connect = () => {
    retryTimer = undefined;
    if (closed) return;
    const now = stampNow();
    if (now !== stamp) {
      try {
        const next = newClient();
        client.close();
        client = next;
        stamp = now;
        opts.logger.info(
          { category: 'technical', event_type: 'xds_client_certificate_reloaded' },
          'control channel certificate files changed; reconnecting with them',
        );
      } catch (error) {
        // Half-written files: keep the last credentials and look again next time.
        opts.logger.warn(
          { category: 'technical', event_type: 'xds_client_certificate_reload_failed', error_details: String(error) },
          'control channel certificate files changed but could not be read; keeping the previous ones',
        );
      }
    }
    const call = client.streamAggregatedResources();
    stream = call;
    call.on('data', (response: DiscoveryResponse) => onResponse(call, response));
    call.on('error', (error: Error & { code?: number }) => {
      if (closed && error.code === grpcStatus.CANCELLED) return;
      opts.logger.warn(
        { category: 'technical', event_type: 'policy_stream_error', error_details: error.message },
        'policy stream failed; reconnecting',
      );
    });
    call.on('status', () => {
      if (stream === call) stream = undefined;
      if (closed) return;
      // Jitter, so that every replica does not reconnect in the same instant after a control-plane restart.
      retryTimer = setTimeout(connect, backoff * (0.5 + Math.random() / 2));
      retryTimer.unref();
      backoff = Math.min(backoff * 2, maxBackoff);
    });
    const metadata = opts.view === undefined ? undefined : { [nodeViewKey]: opts.view };
    call.write(
      request({ node: Node.fromPartial({ id: opts.nodeId, cluster: 'sekisho', userAgentName: 'sekisho', metadata }) }),
    );
  };

  connect();

  return {
    current: () => accepted,
    close: () => {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      stream?.cancel();
      client.close();
    },
  };
}
