// Kubernetes resource quantities (the subset people write: 100m, 0.5, 2, 128Mi, 1G, 1e3).

const pattern = /^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e\d+)?$/;

const factor: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

export function isQuantity(value: string): boolean {
  return value.length <= 32 && pattern.test(value);
}

/** The quantity's value (bytes for memory, cores for CPU); undefined when it is not a quantity. */
export function quantityValue(value: string): number | undefined {
  const match = isQuantity(value) ? pattern.exec(value) : null;
  if (!match) return undefined;
  const suffix = match[3] ?? '';
  const number = Number(match[1]);
  if (suffix.startsWith('e')) return number * 10 ** Number(suffix.slice(1));
  return number * (factor[suffix] ?? 1);
}
