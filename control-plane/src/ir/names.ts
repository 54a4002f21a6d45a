// Names of generated Envoy resources. Fixed here so the bootstrap, the translators and the
// tests agree; service clusters are `svc_<service>`.

export const ingressListenerName = 'ingress_http';
export const ingressRouteConfigName = 'ingress_http';
export const extAuthzClusterName = 'sekisho_ext_authz';
export const rateLimitClusterName = 'sekisho_ratelimit';

export function serviceClusterName(service: string): string {
  return `svc_${service}`;
}
