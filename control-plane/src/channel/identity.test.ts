import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, issueClientCertificate } from '@sekisho/devstack/tls-certs';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { describe, expect, it } from 'vitest';
import { typeUrls } from '../xds/type-urls';
import { allowedViews, authorize, claimedViews, type MeshChannel, type PeerIdentity, peerIdentityOf } from './identity';

const td = 'sekisho.local';
const id = (uris: string[], dnsNames: string[] = [], commonName?: string): PeerIdentity => ({
  uris,
  dnsNames,
  ...(commonName ? { commonName } : {}),
});

describe('allowedViews', () => {
  it.each([
    ['the ingress URI', id(['spiffe://sekisho.local/ingress']), ['ingress']],
    ['ext-authz', id(['spiffe://sekisho.local/ext-authz']), ['ext-authz']],
    ['the rate-limit service', id(['spiffe://sekisho.local/ratelimit']), ['ratelimit']],
    ["a service's sidecar", id(['spiffe://sekisho.local/sidecar/customer']), ['sidecar:customer']],
    [
      'two URIs',
      id(['spiffe://sekisho.local/ratelimit', 'spiffe://sekisho.local/ext-authz']),
      ['ext-authz', 'ratelimit'],
    ],
    ['another trust domain', id(['spiffe://example.org/ingress']), []],
    ['a trust domain that only starts the same', id(['spiffe://sekisho.local.evil/ingress']), []],
    ['an unknown path', id(['spiffe://sekisho.local/admin']), []],
    ['a deeper path', id(['spiffe://sekisho.local/ingress/extra']), []],
    ['a sidecar without a service', id(['spiffe://sekisho.local/sidecar']), []],
    ['a DNS SAN when there is no URI SAN', id([], ['ingress.sekisho.local']), ['ingress']],
    ['a sidecar DNS SAN', id([], ['customer.sidecar.sekisho.local']), ['sidecar:customer']],
    [
      'DNS SANs are ignored once a URI SAN of the domain exists',
      id(['spiffe://sekisho.local/ratelimit'], ['ingress.sekisho.local']),
      ['ratelimit'],
    ],
    ['a DNS SAN of another domain', id([], ['ingress.sekisho.local.example.com']), []],
    ['the common name alone', id([], [], 'ingress.sekisho.local'), []],
  ])('%s', (_, identity, views) => {
    expect(allowedViews(identity, td)).toEqual(views);
  });
});

describe('claimedViews', () => {
  it.each([
    ['sekisho-ingress', ['ingress']],
    ['sekisho', ['ext-authz', 'ratelimit']],
    ['sidecar:customer', ['sidecar:customer']],
    ['sidecar:Not Valid', []],
    ['anything-else', []],
    ['', []],
  ])('cluster %j claims %j', (cluster, views) => {
    expect(claimedViews(Node.fromPartial({ id: 'n', cluster }))).toEqual(views);
  });
});

describe('authorize', () => {
  const node = (cluster: string) => Node.fromPartial({ id: 'n1', cluster });

  it('gives the ingress the Envoy types and none of the policy types', () => {
    const decision = authorize(node('sekisho-ingress'), id(['spiffe://sekisho.local/ingress']), td);
    expect(decision.ok).toBe(true);
    if (!decision.ok) return;
    expect(decision.views).toEqual(['ingress']);
    expect([...decision.types].sort()).toEqual(
      [typeUrls.cluster, typeUrls.endpoint, typeUrls.listener, typeUrls.route, typeUrls.secret].sort(),
    );
  });

  it('gives a policy service exactly its own policy type, decided by the certificate', () => {
    const authz = authorize(node('sekisho'), id(['spiffe://sekisho.local/ext-authz']), td);
    const ratelimit = authorize(node('sekisho'), id(['spiffe://sekisho.local/ratelimit']), td);
    expect(authz.ok && [...authz.types]).toEqual([typeUrls.authzPolicy]);
    expect(ratelimit.ok && [...ratelimit.types]).toEqual([typeUrls.rateLimitPolicy]);
  });

  it.each([
    ['no certificate', node('sekisho-ingress'), undefined, /no verified certificate/],
    [
      'a policy identity claiming the ingress',
      node('sekisho-ingress'),
      id(['spiffe://sekisho.local/ext-authz']),
      /allows ext-authz .*claims ingress/,
    ],
    [
      'the ingress claiming a sidecar',
      node('sidecar:customer'),
      id(['spiffe://sekisho.local/ingress']),
      /claims sidecar:customer/,
    ],
    [
      "one sidecar claiming another's view",
      node('sidecar:billing'),
      id(['spiffe://sekisho.local/sidecar/customer']),
      /allows sidecar:customer/,
    ],
    ['an unknown node cluster', node('mystery'), id(['spiffe://sekisho.local/ingress']), /names no view/],
    ['an identity with no view', node('sekisho'), id([], [], 'ext-authz'), /allows no view/],
  ])('refuses %s', (_, n, identity, reason) => {
    const decision = authorize(n, identity, td);
    expect(decision.ok).toBe(false);
    expect(!decision.ok && decision.reason).toMatch(reason);
  });
});

describe('peerIdentityOf', () => {
  it('reads URI and DNS SANs and the common name of a real certificate', async () => {
    const ca = await createCertificateAuthority('Test CA');
    const issued = await issueClientCertificate(ca, {
      commonName: 'ingress',
      uris: ['spiffe://sekisho.local/ingress'],
      dnsNames: ['ingress.sekisho.local', 'odd,name.example'],
    });
    const der = new X509Certificate(issued.certificatePem).raw;
    expect(peerIdentityOf(der)).toEqual({
      uris: ['spiffe://sekisho.local/ingress'],
      dnsNames: ['ingress.sekisho.local', 'odd,name.example'],
      commonName: 'ingress',
    });
    expect(new X509Certificate(issued.certificatePem).keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // clientAuth
  });

  it('is undefined without a certificate', () => {
    expect(peerIdentityOf(undefined)).toBeUndefined();
    expect(peerIdentityOf(Buffer.alloc(0))).toBeUndefined();
  });
});

describe('authorize, a sidecar with its per-pod mesh certificate (csi-driver-spiffe)', () => {
  const meshTd = 'cluster.local';
  // The sidecar views of the definition and the workload each serves (its certificate's SPIFFE id).
  const served: Record<string, string> = {
    'sidecar:customer': 'spiffe://cluster.local/ns/salon/sa/customer',
    'sidecar:booking': 'spiffe://cluster.local/ns/salon/sa/booking',
  };
  const mesh: MeshChannel = { trustDomain: meshTd, workloadOf: (view) => served[view] };
  const sidecar = (service: string, id = `${service}-7d9f-abcde.salon`) =>
    Node.fromPartial({ id, cluster: `sidecar:${service}` });
  const meshId = (uri: string | string[]): PeerIdentity => ({
    uris: Array.isArray(uri) ? uri : [uri],
    dnsNames: [],
    authority: 'mesh',
  });
  const channelId = (uri: string): PeerIdentity => ({ uris: [uri], dnsNames: [], authority: 'control-channel' });

  it("serves the mesh identity its service's sidecar view, with the Envoy types", () => {
    const decision = authorize(
      sidecar('customer'),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      td,
      'sidecar:customer',
      mesh,
    );
    expect(decision).toMatchObject({ ok: true, views: ['sidecar:customer'] });
    expect(decision.ok && [...decision.types].sort()).toEqual(
      [typeUrls.cluster, typeUrls.endpoint, typeUrls.listener, typeUrls.route, typeUrls.secret].sort(),
    );
  });

  it('accepts a pod name with dots: the namespace is what follows the last dot of the node id', () => {
    const decision = authorize(
      sidecar('customer', 'customer.v2-abcde.salon'),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      td,
      'sidecar:customer',
      mesh,
    );
    expect(decision.ok).toBe(true);
  });

  it('still serves the legacy control channel identity sidecar/<service> (Secret mode)', () => {
    const decision = authorize(
      sidecar('customer'),
      channelId('spiffe://sekisho.local/sidecar/customer'),
      td,
      'sidecar:customer',
      mesh,
    );
    expect(decision).toMatchObject({ ok: true, views: ['sidecar:customer'] });
  });

  it.each([
    [
      "another service account's certificate",
      sidecar('customer'),
      meshId('spiffe://cluster.local/ns/salon/sa/booking'),
      'sidecar:customer',
      /spiffe:\/\/cluster.local\/ns\/salon\/sa\/booking is not the workload of sidecar:customer \(spiffe:\/\/cluster.local\/ns\/salon\/sa\/customer\)/,
    ],
    [
      'the same service account of another namespace',
      sidecar('customer', 'customer-7d9f-abcde.other'),
      meshId('spiffe://cluster.local/ns/other/sa/customer'),
      'sidecar:customer',
      /is not the workload of sidecar:customer/,
    ],
    [
      'another trust domain',
      sidecar('customer'),
      meshId('spiffe://example.org/ns/salon/sa/customer'),
      'sidecar:customer',
      /trust domain example.org; the mesh's is cluster.local/,
    ],
    [
      "a node id of another namespace than the certificate's",
      sidecar('customer', 'customer-7d9f-abcde.elsewhere'),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      'sidecar:customer',
      /node id "customer-7d9f-abcde.elsewhere" is not of the namespace salon/,
    ],
    [
      'a node id without a namespace',
      sidecar('customer', 'customer-7d9f-abcde'),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      'sidecar:customer',
      /is not of the namespace salon/,
    ],
    [
      'a view the definition does not serve',
      sidecar('billing'),
      meshId('spiffe://cluster.local/ns/salon/sa/billing'),
      'sidecar:billing',
      /sidecar:billing serves no mesh workload/,
    ],
    [
      'a workload identity claiming the ingress',
      Node.fromPartial({ id: 'ingress-1.sekisho-system', cluster: 'sekisho-ingress' }),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      'ingress',
      /reads only its sidecar view/,
    ],
    [
      'a mesh certificate naming a control channel identity',
      sidecar('customer'),
      meshId('spiffe://sekisho.local/sidecar/customer'),
      'sidecar:customer',
      /not a workload SPIFFE id/,
    ],
    [
      'a mesh certificate naming the ingress',
      Node.fromPartial({ id: 'ingress-1.sekisho-system', cluster: 'sekisho-ingress' }),
      meshId('spiffe://sekisho.local/ingress'),
      'ingress',
      /not a workload SPIFFE id/,
    ],
    [
      'two URI SANs',
      sidecar('customer'),
      meshId(['spiffe://cluster.local/ns/salon/sa/customer', 'spiffe://cluster.local/ns/salon/sa/booking']),
      'sidecar:customer',
      /exactly one URI SAN, this one has 2/,
    ],
    [
      'a workload id in a certificate of the control channel CA',
      sidecar('customer'),
      channelId('spiffe://cluster.local/ns/salon/sa/customer'),
      'sidecar:customer',
      /allows no view/,
    ],
  ])('refuses %s', (_, n, identity, view, reason) => {
    const decision = authorize(n, identity, td, view, mesh);
    expect(decision.ok).toBe(false);
    expect(!decision.ok && decision.reason).toMatch(reason);
  });

  it('lapses once the view serves another workload (a new definition moved its service account)', () => {
    const views: Record<string, string> = { 'sidecar:customer': 'spiffe://cluster.local/ns/salon/sa/customer' };
    const decision = authorize(
      sidecar('customer'),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      td,
      'sidecar:customer',
      { trustDomain: meshTd, workloadOf: (view) => views[view] },
    );
    expect(decision.ok && decision.revalidate?.()).toBeUndefined();
    views['sidecar:customer'] = 'spiffe://cluster.local/ns/salon/sa/customer-v2';
    expect(decision.ok && decision.revalidate?.()).toBe(
      'sidecar:customer now serves spiffe://cluster.local/ns/salon/sa/customer-v2, not spiffe://cluster.local/ns/salon/sa/customer',
    );
    delete views['sidecar:customer'];
    expect(decision.ok && decision.revalidate?.()).toMatch(/now serves no mesh workload/);
    // A channel identity's grant does not depend on the definition.
    const legacy = authorize(
      sidecar('customer'),
      channelId('spiffe://sekisho.local/sidecar/customer'),
      td,
      'sidecar:customer',
      mesh,
    );
    expect(legacy.ok && legacy.revalidate).toBeUndefined();
  });

  it('refuses every mesh certificate when the control plane has no mesh CA', () => {
    const decision = authorize(
      sidecar('customer'),
      meshId('spiffe://cluster.local/ns/salon/sa/customer'),
      td,
      'sidecar:customer',
    );
    expect(!decision.ok && decision.reason).toMatch(/no mesh CA/);
  });
});

describe('peerIdentityOf, telling the two CAs apart', () => {
  it('marks a certificate the channel CA signed control-channel, any other mesh', async () => {
    const channel = await createCertificateAuthority('channel CA');
    const other = await createCertificateAuthority('mesh root');
    const channelCert = new X509Certificate(
      (await issueClientCertificate(channel, { commonName: 'x', uris: ['spiffe://sekisho.local/ingress'] }))
        .certificatePem,
    );
    const meshCert = new X509Certificate(
      (
        await issueClientCertificate(other, {
          commonName: 'y',
          uris: ['spiffe://sekisho.local/ingress'],
        })
      ).certificatePem,
    );
    const authorities = [new X509Certificate(channel.certificatePem)];
    expect(peerIdentityOf(channelCert.raw, authorities)?.authority).toBe('control-channel');
    expect(peerIdentityOf(meshCert.raw, authorities)?.authority).toBe('mesh');
    // A mesh-signed certificate naming the ingress reads nothing.
    const decision = authorize(
      Node.fromPartial({ id: 'i.sekisho-system', cluster: 'sekisho-ingress' }),
      peerIdentityOf(meshCert.raw, authorities),
      td,
      'ingress',
      { trustDomain: 'cluster.local', workloadOf: () => undefined },
    );
    expect(decision.ok).toBe(false);
  });
});
