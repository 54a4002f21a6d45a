// Envoy substitution-format operators used by more than one translator.

/** The request's start as ISO-8601 in UTC with milliseconds, like the services' logs. */
export const startTimeIso = '%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%';
/** Envoy's x-request-id: the correlation id of every log line and error body. */
export const requestIdOperator = '%REQ(X-REQUEST-ID)%';
