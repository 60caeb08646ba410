import { readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * CPUs this process may use: the affinity mask (os.availableParallelism)
 * capped by the cgroup CPU quota, so that a pod limited to `cpu: 2` on a
 * 64-core node starts 2 threads, not 64.
 */
export function usableCpus(): number {
  const affinity = os.availableParallelism();
  const quota = cgroupCpuQuota();
  return quota === null ? affinity : Math.max(1, Math.min(affinity, Math.ceil(quota)));
}

/** The cgroup CPU limit in CPUs, or null when unlimited or unknown. */
export function cgroupCpuQuota(
  read: (path: string) => string | null = readOrNull,
): number | null {
  // cgroup v2: "max 100000" or "200000 100000"
  const v2 = read('/sys/fs/cgroup/cpu.max');
  if (v2 !== null) {
    const [quota, period] = v2.trim().split(/\s+/);
    if (quota === 'max' || !quota || !period) return null;
    const q = Number(quota);
    const p = Number(period);
    return q > 0 && p > 0 ? q / p : null;
  }
  // cgroup v1
  const q1 = read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') ?? read('/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us');
  const p1 = read('/sys/fs/cgroup/cpu/cpu.cfs_period_us') ?? read('/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us');
  if (q1 === null || p1 === null) return null;
  const q = Number(q1.trim());
  const p = Number(p1.trim());
  return q > 0 && p > 0 ? q / p : null;
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}
