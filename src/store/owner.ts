/**
 * Which process owns a temporary folder under `<data_dir>/tmp/`. Several processes may write into
 * one data directory at once (a server and a `seed` or `import` beside it), each into a folder of
 * its own named `p<pid>-<start>`, where <start> is the process's start time in clock ticks since
 * boot (/proc/<pid>/stat, field 22). A folder is a leftover only when no live process has both
 * that pid and that start time, so a pid reused after a crash does not keep a dead process's
 * files, and a live `seed` never loses its files to a starting server (issue 14, defect 3).
 * Where /proc is missing, liveness is `kill(pid, 0)` alone.
 */
import { readFileSync } from 'node:fs';

const OWNER = /^p(\d+)-(\d+|x)$/;

/** The start time of process `pid` from /proc, or undefined when there is no such process or no /proc. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: count from its end.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

/** This process's owner token: `p<pid>-<start>`. */
export function ownerToken(pid = process.pid): string {
  return `p${pid}-${startTime(pid) ?? 'x'}`;
}

/**
 * True when `name` is an owner token of a live process (this one included). Names that are not
 * owner tokens are false: they are not any live process's folder.
 */
export function ownerAlive(name: string): boolean {
  const m = OWNER.exec(name);
  if (m === null) return false;
  const pid = Number(m[1]);
  if (m[2] !== 'x') return startTime(pid) === m[2];
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
