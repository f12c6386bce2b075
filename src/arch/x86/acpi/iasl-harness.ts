/**
 * Test support: runs ACPICA's iasl (package acpica-tools) on tables built here, so the tests
 * check them against an independent implementation of the ACPI specification.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Output lines of iasl that mean it found something wrong with the input. */
const PROBLEM = /error|warning|invalid|incorrect|unknown|too long|too short/i;

function inTempDir<T>(work: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'memvisor-iasl-'));
  try {
    return work(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function iasl(dir: string, args: string[]): string {
  const run = spawnSync('iasl', args, { cwd: dir, encoding: 'utf8' });
  assert.equal(run.error, undefined, `iasl could not run: ${run.error?.message}`);
  const output = `${run.stdout}\n${run.stderr}`;
  assert.equal(run.status, 0, `iasl ${args.join(' ')} failed:\n${output}`);
  return output;
}

/** Disassembles `table` with `iasl -d`; fails on any error or warning. Returns the .dsl text. */
export function disassemble(table: Uint8Array): string {
  return inTempDir((dir) => {
    writeFileSync(join(dir, 'table.dat'), table);
    const output = iasl(dir, ['-d', 'table.dat']);
    const problems = output.split('\n').filter((line) => PROBLEM.test(line));
    assert.deepEqual(problems, [], `iasl -d reported:\n${output}`);
    const dsl = readFileSync(join(dir, 'table.dsl'), 'utf8');
    const flagged = dsl.split('\n').filter((line) => PROBLEM.test(line));
    assert.deepEqual(flagged, [], 'the disassembly flags fields');
    return dsl;
  });
}

/** Compiles ASL or data-table source with every optimisation off; fails unless 0 errors. */
export function compile(source: string): Uint8Array {
  return inTempDir((dir) => {
    writeFileSync(join(dir, 'table.dsl'), source);
    const output = iasl(dir, ['-oa', 'table.dsl']);
    assert.match(output, /Compilation successful\. 0 Errors, 0 Warnings/);
    return new Uint8Array(readFileSync(join(dir, 'table.aml')));
  });
}

/**
 * Disassembles `table`, compiles the disassembly again and checks the bytes match, apart from
 * the header fields iasl rewrites (checksum, compiler id and revision) and, in AML, the End Tag
 * checksums, which iasl leaves zero ("not checked"). Returns the disassembly.
 */
export function assertRoundTrip(table: Uint8Array): string {
  const dsl = disassemble(table);
  const again = compile(dsl);
  assert.equal(again.length, table.length, 'recompiled length');
  const isAml = ['DSDT', 'SSDT'].includes(new TextDecoder().decode(table.subarray(0, 4)));
  for (let i = 0; i < table.length; i++) {
    if (i === 9 || (i >= 28 && i < 36)) continue;
    if (isAml && again[i] === 0 && table[i - 1] === 0x79) continue;
    assert.equal(again[i], table[i], `byte 0x${i.toString(16)} after a round trip through iasl`);
  }
  return dsl;
}

/**
 * Loads `tables` (DSDT and data tables, no RSDP/XSDT: acpiexec builds its own) into ACPICA's
 * acpiexec, runs `commands` (separated by ';') and returns its output; fails on any error or
 * warning, so the tables are known to pass ACPICA's table checks and its AML interpreter.
 */
export function acpiexec(tables: readonly Uint8Array[], commands: string): string {
  return inTempDir((dir) => {
    const files = tables.map((table, i) => {
      const file = `t${i}.dat`;
      writeFileSync(join(dir, file), table);
      return file;
    });
    const run = spawnSync('acpiexec', ['-b', commands, ...files], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(run.error, undefined, `acpiexec could not run: ${run.error?.message}`);
    const output = `${run.stdout}\n${run.stderr}`;
    assert.equal(run.status, 0, `acpiexec failed:\n${output}`);
    const problems = output.split('\n').filter((line) => PROBLEM.test(line));
    assert.deepEqual(problems, [], `acpiexec reported:\n${output}`);
    return output;
  });
}
