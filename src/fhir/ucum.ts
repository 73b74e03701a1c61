import ucum from '@lhncbc/ucum-lhc';

const utils = ucum.UcumLhcUtils.getInstance();

export function isUcumUnit(unit: string): boolean {
  return utils.validateUnitString(unit).status === 'valid';
}

/**
 * A quantity converted to `to` (a UCUM code), or a message saying why it cannot be: an Observation in `[degF]` is
 * converted to `Cel`, never skipped in favour of an older Celsius reading, and never used unconverted.
 */
export function convert(value: number, from: string, to: string): number | { error: string } {
  if (from === to) return value;
  const r = utils.convertUnitTo(from, value, to);
  if (r.status !== 'succeeded' || typeof r.toVal !== 'number' || !Number.isFinite(r.toVal)) {
    return { error: `unit ${JSON.stringify(from.slice(0, 32))} cannot be converted to ${to}` };
  }
  // conversion factors leave binary noise (100.4 [degF] → 38.00000000000006 Cel)
  return Number(r.toVal.toPrecision(12));
}
