// @lhncbc/ucum-lhc ships no type declarations: only the two calls src/fhir/ucum.ts makes are declared.
declare module '@lhncbc/ucum-lhc' {
  interface UcumLhcUtils {
    validateUnitString(unit: string): { status: 'valid' | 'invalid' | 'error'; msg: string[] };
    convertUnitTo(from: string, value: number, to: string): { status: string; toVal: number | null; msg: string[] };
  }
  const ucum: { UcumLhcUtils: { getInstance(): UcumLhcUtils } };
  export default ucum;
}
