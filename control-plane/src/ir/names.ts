// Names of generated Envoy resources. Fixed here so the bootstrap, the translators and the
// tests agree; service clusters are `svc_<service>`.

export const ingressListenerName = 'ingress_http';
export const ingressRouteConfigName = 'ingress_http';
export const ingressHttpsListenerName = 'ingress_https';
/** The plain-HTTP listener's routes while it redirects to HTTPS. */
export const ingressRedirectRouteConfigName = 'ingress_http_redirect';

export function ingressCertificateSecretName(index: number): string {
  return `ingress_https_cert_${index}`;
}
export const extAuthzClusterName = 'sekisho_ext_authz';
export const rateLimitClusterName = 'sekisho_ratelimit';
export const threatDetectorClusterName = 'sekisho_threat_detector';

export function serviceClusterName(service: string): string {
  return `svc_${service}`;
}
