import { Counter, Gauge, type Registry } from 'prom-client';

export interface InjectorMetrics {
  reviews: Counter<'outcome'>;
  certificateExpiry: Gauge;
  certificateReloads: Counter;
}

export function createInjectorMetrics(registry: Registry): InjectorMetrics {
  return {
    reviews: new Counter({
      name: 'sekisho_injector_reviews_total',
      help: 'AdmissionReviews answered, by outcome (injected, skipped, denied, malformed)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    certificateExpiry: new Gauge({
      name: 'sekisho_injector_certificate_expiry_timestamp_seconds',
      help: "The webhook serving certificate's notAfter",
      registers: [registry],
    }),
    certificateReloads: new Counter({
      name: 'sekisho_injector_certificate_reloads_total',
      help: 'Times a renewed serving certificate was taken into use',
      registers: [registry],
    }),
  };
}
