/** The benchmark's measurements: rows as `latest.json` stores them, and host memory timelines. */

/** One measured value. `value` is null only when the measurement itself failed (`note` says). */
export interface Row {
  scenario: string;
  method: string;
  vmm: 'qemu' | 'memvisor';
  metric: string;
  value: number | null;
  unit: string;
  note?: string;
}

/** One sample of host resident memory during the speed scenario. */
export interface RssSample {
  method: string;
  vmm: 'qemu' | 'memvisor';
  seconds: number;
  residentMiB: number;
  /** What the guest was asked to hold above its floor at that moment, in MiB. */
  requestedMiB: number;
}

/** Collects rows and samples, and echoes each row as it comes. */
export class Results {
  readonly rows: Row[] = [];
  readonly rss: RssSample[] = [];
  #echo: (line: string) => void;

  constructor(echo: (line: string) => void = (line) => process.stderr.write(`${line}\n`)) {
    this.#echo = echo;
  }

  /** A recorder bound to one scenario, method and VMM. */
  recorder(scenario: string, method: string, vmm: Row['vmm']): Recorder {
    return (metric, value, unit, note) => {
      const v = value === null || Number.isFinite(value) ? value : null;
      const row: Row = { scenario, method, vmm, metric, value: v, unit };
      if (note !== undefined) row.note = note;
      this.rows.push(row);
      const shown = v === null ? 'n/a' : String(Math.round(v * 1000) / 1000);
      this.#echo(`bench: ${vmm} ${method} ${scenario} ${metric} = ${shown} ${unit} ${note ?? ''}`);
    };
  }

  /** The first row matching all given fields. */
  find(q: Partial<Row>): Row | undefined {
    return this.rows.find((r) => Object.entries(q).every(([k, v]) => r[k as keyof Row] === v));
  }
}

/** Records one metric of the bound scenario. */
export type Recorder = (metric: string, value: number | null, unit: string, note?: string) => void;
