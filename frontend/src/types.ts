// The public API's shapes the dashboard reads (hutch's src/hutch/api/http/schemas.py).

export interface ListedSandbox {
  templateID: string;
  sandboxID: string;
  alias?: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB?: number;
  state: string;
  envdVersion: string;
  metadata: Record<string, string>;
  volumeMounts?: { name: string; path: string }[];
}

export interface SandboxDetail extends ListedSandbox {
  allowInternetAccess?: boolean;
  lifecycle?: { autoResume: boolean; onTimeout: string };
  pauseMode?: string;
}

export interface Metric {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache?: number;
  diskUsed: number;
  diskTotal: number;
}

export interface LogEntry {
  timestamp: string;
  message: string;
  level: string;
  fields: Record<string, string>;
}

export interface Build {
  buildID: string;
  status: string;
  createdAt: string;
  updatedAt: string;
  finishedAt?: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB?: number;
}

export interface Template {
  templateID: string;
  buildID: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB?: number;
  public: boolean;
  aliases: string[];
  names?: string[];
  createdAt: string;
  updatedAt: string;
  buildCount: number;
  envdVersion: string;
  buildStatus?: string;
  builds?: Build[];
}

export interface BuildLogEntry {
  timestamp: string;
  level: string;
  message: string;
  step?: string;
}

export interface Volume {
  volumeID: string;
  name: string;
  sizeMB: number;
  usedBytes?: number;
  totalBytes?: number;
}

/** An entry of the volume content API (``VolumeEntryStat``). */
export interface VolumeEntry {
  name: string;
  type: string;
  path: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: string;
  target?: string;
  metadata?: Record<string, string>;
}

export interface Snapshot {
  snapshotID: string;
  names: string[];
}

export interface ApiKey {
  id: string;
  name: string;
  mask: { prefix: string; maskedValuePrefix: string; maskedValueSuffix: string };
  createdAt: string;
  key?: string;
}

export interface HutchNode {
  id: string;
  address: string;
  status: string;
  version: string;
  sandboxCount: number;
  sandboxStartingCount: number;
  createSuccesses: number;
  createFails: number;
  heartbeatAt: string;
  leaseExpiresAt: string;
  lostReason?: string | null;
  labels: Record<string, string>;
  metrics: {
    allocatedCPU: number;
    allocatedMemoryBytes: number;
    cpuPercent: number;
    memoryUsedBytes: number;
    cpuCount: number;
    memoryTotalBytes: number;
    disks: { mountPoint: string; usedBytes: number; totalBytes: number }[];
  };
  capacity: { cpuCount: number; memoryMB: number; diskMB: number; maxSandboxes: number };
  allocatedDiskMB: number;
}

export interface HutchStatus {
  nodeID: string;
  runtime: string;
  pool: { templateID: string; target: number; ready: number }[];
}

export interface EntryInfo {
  name: string;
  type: string;
  path: string;
  size?: string | number;
  mode?: number;
  permissions?: string;
  owner?: string;
  group?: string;
  modifiedTime?: string;
  symlinkTarget?: string;
  metadata?: Record<string, string>;
  isSymlink?: boolean;
}
