import { type AdmissionResponse, allow, deny, parseAdmissionReview, reviewResponse } from './admission';
import type { XdsTrust } from './bootstrap';
import type { InjectorConfig } from './config';
import { injectionPatch } from './patch';
import { sidecarParts } from './sidecar';
import { decide } from './workload';

// One AdmissionReview in, one HTTP answer out. Pure (no I/O), never throws.
//
// Kubernetes semantics: an envelope the injector cannot answer (not JSON, not an
// admission.k8s.io/v1 AdmissionReview, no request uid) gets HTTP 400: there is no uid to put in
// a response, and the API server then applies the webhook's failurePolicy. A well-formed
// review always gets HTTP 200 with an AdmissionReview: the patch, a plain allow (with a
// warning when the object was not what the webhook is registered for), or a denial naming the
// pod's bad annotation. dryRun changes nothing: the injector has no side effects.

export type ReviewResult =
  | {
      status: 200;
      body: ReturnType<typeof reviewResponse>;
      outcome: 'injected' | 'skipped' | 'denied';
      detail: string;
      dryRun: boolean;
    }
  | { status: 400; body: { error: string }; outcome: 'malformed'; detail: string; dryRun: false };

export function handleReview(body: string, config: InjectorConfig, trust: XdsTrust = {}): ReviewResult {
  const parsed = parseAdmissionReview(body);
  if (!parsed.ok)
    return {
      status: 400,
      body: { error: parsed.message },
      outcome: 'malformed',
      detail: parsed.message,
      dryRun: false,
    };
  const request = parsed.request;
  const dryRun = request.dryRun === true;
  let response: AdmissionResponse;
  let outcome: 'injected' | 'skipped' | 'denied';
  let detail: string;
  try {
    const decision = decide(request, config);
    if (decision.kind === 'inject') {
      response = allow(request.uid, injectionPatch(decision.pod, sidecarParts(decision.workload, config, trust)));
      outcome = 'injected';
      detail = `${decision.workload.namespace}/${decision.workload.service}`;
    } else if (decision.kind === 'skip') {
      response = allow(request.uid, undefined, decision.warning ? [decision.warning] : undefined);
      outcome = 'skipped';
      detail = decision.reason;
    } else {
      response = deny(request.uid, decision.message);
      outcome = 'denied';
      detail = decision.message;
    }
  } catch (error) {
    // A bug must not become an unanswered review: allow unchanged and say why.
    const message = `sekisho-injector: not injected: internal error: ${error instanceof Error ? error.message : String(error)}`;
    response = allow(request.uid, undefined, [message]);
    outcome = 'skipped';
    detail = message;
  }
  return { status: 200, body: reviewResponse(response), outcome, detail, dryRun };
}
