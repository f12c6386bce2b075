/**
 * Builds and caches the guest image: Debian's kernel (bzImage and its ELF vmlinux), the guest
 * initramfs (busybox, the virtio modules, `/init` and the agent) and the box initramfs (busybox,
 * kvm-amd, 9p, virtio-pci, virtio-console and virtio-net). Inputs are Debian packages fetched
 * with `apt-get download`; the manifest records their versions and hashes together with a hash of
 * the scripts, and the image is rebuilt only when one of those changes.
 *
 * Known gap: two processes building at the same moment both build; the last rename wins and both
 * results are valid, so nothing breaks but the time spent twice.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { MemvisorError } from '../util/errors.js';
import { extractVmlinux } from './bzimage.js';
import { type CpioEntry, writeCpio } from './cpio.js';
import { AGENT_SCRIPT, BOX_INIT, GUEST_INIT } from './scripts.js';

/** The base guest kernel command line; the VMM appends its own options. */
export const GUEST_CMDLINE =
  'console=ttyS0 reboot=acpi panic=1 pci=off memhp_default_state=online_movable quiet rdinit=/init';

/**
 * The box kernel's command line: console to the log port, no reboot loop on panic, and the
 * stack of every CPU in the log when one of them stops scheduling (loglevel 5 lets the warning
 * level traces through), so a wedged box says where it was stuck.
 */
export const BOX_CMDLINE =
  'console=ttyS0 rdinit=/init panic=-1 loglevel=5 softlockup_all_cpu_backtrace=1 ' +
  'mitigations=off';

/** Modules the guest loads; their dependencies are added ahead of them. */
export const GUEST_MODULES = ['virtio_mmio', 'virtio_mem', 'virtio_balloon'] as const;
/** Modules the box loads; their dependencies are added ahead of them. */
export const BOX_MODULES = [
  'kvm-amd',
  '9p',
  '9pnet_virtio',
  'virtio_pci',
  'virtio_console',
  'virtio_net',
];

/** Bumped whenever the layout of the built files changes. */
const FORMAT_VERSION = 1;
const KERNEL_META_PACKAGE = 'linux-image-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';

/** Paths and versions of a built image. */
export interface GuestImage {
  /** The bzImage. */
  kernel: string;
  /** The ELF kernel, for QEMU's PVH boot. */
  vmlinux: string;
  /** The guest initramfs (gzip-compressed newc cpio). */
  initrd: string;
  /** The box initramfs. */
  boxInitrd: string;
  /** `uname -r` of the kernel, e.g. `6.1.0-57-amd64`. */
  kernelVersion: string;
  /** Base guest command line, the same as `GUEST_CMDLINE`. */
  cmdline: string;
  /** The folder holding all of the above and `manifest.json`. */
  dir: string;
}

/** What `manifest.json` records. */
export interface ImageManifest {
  format: number;
  inputs: {
    kernelPackage: string;
    kernelPackageVersion: string;
    busyboxVersion: string;
    scriptsSha256: string;
  };
  kernelVersion: string;
  /** `aptListsStamp()` when the inputs were resolved. */
  aptListsStamp: number;
  debSha256: Record<string, string>;
  guestModules: string[];
  boxModules: string[];
  builtAt: string;
}

/** The cache root: `$MEMVISOR_CACHE`, else `~/.cache/memvisor`. */
export function cacheDir(): string {
  return process.env.MEMVISOR_CACHE || join(homedir(), '.cache', 'memvisor');
}

function run(cmd: string, args: string[], cwd?: string): string {
  const result = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (result.error || result.status !== 0) {
    const why = result.error?.message ?? result.stderr.trim();
    throw new MemvisorError('image_build_failed', `${cmd} ${args.join(' ')}: ${why}`);
  }
  return result.stdout;
}

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function candidateVersion(pkg: string): string {
  const out = run('apt-cache', ['show', '--no-all-versions', pkg]);
  const match = /^Version: (\S+)$/m.exec(out);
  if (!match?.[1]) throw new MemvisorError('image_build_failed', `no version for ${pkg}`);
  return match[1];
}

function resolveInputs(): ImageManifest['inputs'] {
  const depends = run('apt-cache', ['depends', KERNEL_META_PACKAGE]);
  const kernel = /Depends: (linux-image-6\.1\.\S+-amd64)$/m.exec(depends)?.[1];
  if (!kernel) {
    throw new MemvisorError('image_build_failed', `${KERNEL_META_PACKAGE} names no 6.1 kernel`);
  }
  return {
    kernelPackage: kernel,
    kernelPackageVersion: candidateVersion(kernel),
    busyboxVersion: candidateVersion(BUSYBOX_PACKAGE),
    scriptsSha256: scriptsSha256(),
  };
}

/** Resolves package versions from apt's lists, updating them once if they are missing. */
function resolveInputsUpdatingLists(): ImageManifest['inputs'] {
  try {
    return resolveInputs();
  } catch {
    run('apt-get', ['update', '-q']);
    return resolveInputs();
  }
}

function readManifest(dir: string): ImageManifest | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as ImageManifest;
  } catch {
    return undefined;
  }
}

function imagePaths(dir: string, manifest: ImageManifest): GuestImage {
  return {
    kernel: join(dir, 'vmlinuz'),
    vmlinux: join(dir, 'vmlinux'),
    initrd: join(dir, 'initrd.gz'),
    boxInitrd: join(dir, 'box-initrd.gz'),
    kernelVersion: manifest.kernelVersion,
    cmdline: GUEST_CMDLINE,
    dir,
  };
}

function complete(image: GuestImage): boolean {
  return [image.kernel, image.vmlinux, image.initrd, image.boxInitrd].every((p) => existsSync(p));
}

/** Returns the .deb for `pkg` at `version`, downloading it into `debDir` if absent. */
function fetchDeb(debDir: string, pkg: string, version: string): string {
  const find = () =>
    readdirSync(debDir).find(
      (f) =>
        f.startsWith(`${pkg}_`) &&
        f.endsWith('.deb') &&
        decodeURIComponent(f).includes(`_${version}_`),
    );
  const cached = find();
  if (cached) return join(debDir, cached);
  run('apt-get', ['download', '-q', `${pkg}=${version}`], debDir);
  const fetched = find();
  if (!fetched)
    throw new MemvisorError('image_build_failed', `apt-get download ${pkg} left no .deb`);
  return join(debDir, fetched);
}

/**
 * Lists `.ko` paths for `modules` and their dependencies in load order, without duplicates,
 * using `modprobe --show-depends` against the unpacked tree. Built-in modules need no file.
 */
export function moduleLoadOrder(root: string, kernelVersion: string, modules: readonly string[]) {
  const order: string[] = [];
  for (const module of modules) {
    const out = run('modprobe', ['--show-depends', '-d', root, '-S', kernelVersion, module]);
    for (const line of out.split('\n')) {
      const path = /^insmod (\S+\.ko(?:\.xz|\.zst)?)/.exec(line)?.[1];
      if (path && !order.includes(path)) order.push(path);
    }
  }
  return order;
}

function busyboxEntries(busybox: Buffer, applets: string[]): CpioEntry[] {
  const entries: CpioEntry[] = [];
  for (const dir of ['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'etc', 'lib', 'lib/modules']) {
    entries.push({ kind: 'dir', path: dir });
  }
  entries.push({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 });
  for (const applet of applets) {
    if (applet !== 'busybox')
      entries.push({ kind: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  }
  return entries;
}

function moduleEntries(modulePaths: string[]): CpioEntry[] {
  const names = modulePaths.map((p) => basename(p));
  return [
    ...modulePaths.map(
      (p, i): CpioEntry => ({
        kind: 'file',
        path: `lib/modules/${names[i]}`,
        data: readFileSync(p),
      }),
    ),
    { kind: 'file', path: 'etc/modules.order', data: Buffer.from(`${names.join('\n')}\n`) },
  ];
}

function build(dir: string, inputs: ImageManifest['inputs'], quiet: boolean): GuestImage {
  const stamp = aptListsStamp();
  const say = (line: string) => quiet || process.stderr.write(`image: ${line}\n`);
  const debDir = join(cacheDir(), 'debs');
  mkdirSync(debDir, { recursive: true });
  say(`fetching ${inputs.kernelPackage} ${inputs.kernelPackageVersion}, busybox-static`);
  const kernelDeb = fetchDeb(debDir, inputs.kernelPackage, inputs.kernelPackageVersion);
  const busyboxDeb = fetchDeb(debDir, BUSYBOX_PACKAGE, inputs.busyboxVersion);

  const staging = `${dir}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  const root = join(staging, 'root');
  mkdirSync(root, { recursive: true });
  try {
    run('dpkg-deb', ['-x', kernelDeb, root]);
    run('dpkg-deb', ['-x', busyboxDeb, root]);
    const kernelVersion = readdirSync(join(root, 'lib/modules'))[0];
    if (!kernelVersion)
      throw new MemvisorError('image_build_failed', 'kernel package has no modules');
    // The package ships no modules.dep (its postinst makes it), so build one in the copy.
    run('depmod', ['-b', root, kernelVersion]);
    const guestModules = moduleLoadOrder(root, kernelVersion, GUEST_MODULES);
    const boxModules = moduleLoadOrder(root, kernelVersion, BOX_MODULES);

    const busyboxPath = join(root, 'bin/busybox');
    const busybox = readFileSync(busyboxPath);
    const applets = run(busyboxPath, ['--list'])
      .split('\n')
      .filter((a) => /^[\w.[-]+$/.test(a));
    const base = busyboxEntries(busybox, applets);
    const script = (path: string, text: string): CpioEntry => ({
      kind: 'file',
      path,
      data: Buffer.from(text),
      mode: 0o755,
    });

    say(`packing initramfs images (${guestModules.length} + ${boxModules.length} modules)`);
    const guestCpio = writeCpio([
      ...base,
      ...moduleEntries(guestModules),
      script('init', GUEST_INIT),
      script('bin/memvisor-agent', AGENT_SCRIPT),
    ]);
    const boxCpio = writeCpio([
      ...base,
      { kind: 'dir', path: 'newroot' },
      ...moduleEntries(boxModules),
      script('init', BOX_INIT),
    ]);
    const bzImage = readFileSync(join(root, `boot/vmlinuz-${kernelVersion}`));
    say('decompressing vmlinux');
    writeFileSync(join(staging, 'vmlinuz'), bzImage);
    writeFileSync(join(staging, 'vmlinux'), extractVmlinux(bzImage));
    writeFileSync(join(staging, 'initrd.gz'), gzipSync(guestCpio, { level: 6 }));
    writeFileSync(join(staging, 'box-initrd.gz'), gzipSync(boxCpio, { level: 6 }));

    const manifest: ImageManifest = {
      format: FORMAT_VERSION,
      inputs,
      kernelVersion,
      aptListsStamp: stamp,
      debSha256: {
        [basename(kernelDeb)]: sha256(readFileSync(kernelDeb)),
        [basename(busyboxDeb)]: sha256(readFileSync(busyboxDeb)),
      },
      guestModules: guestModules.map((p) => basename(p)),
      boxModules: boxModules.map((p) => basename(p)),
      builtAt: new Date().toISOString(),
    };
    writeFileSync(join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    rmSync(root, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
    say(`built in ${dir}`);
    return imagePaths(dir, manifest);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

const APT_LISTS = '/var/lib/apt/lists';

/**
 * The newest modification time of apt's package lists: while it is unchanged, package versions
 * cannot have changed, and asking apt-cache (about two seconds) can be skipped.
 */
function aptListsStamp(): number {
  try {
    return Math.max(
      0,
      ...readdirSync(APT_LISTS)
        .filter((f) => f.includes('_Packages'))
        .map((f) => statSync(join(APT_LISTS, f)).mtimeMs),
    );
  } catch {
    return 0;
  }
}

function scriptsSha256(): string {
  return sha256(
    JSON.stringify([
      FORMAT_VERSION,
      AGENT_SCRIPT,
      GUEST_INIT,
      BOX_INIT,
      GUEST_MODULES,
      BOX_MODULES,
    ]),
  );
}

/**
 * Returns the cached guest image, building it first when it is missing or when a package
 * version or the scripts changed. With no reachable package lists, a complete cached image is
 * used as it is.
 */
export async function ensureGuestImage(opts: { quiet?: boolean } = {}): Promise<GuestImage> {
  const dir = join(cacheDir(), 'image');
  const cached = readManifest(dir);
  const stamp = aptListsStamp();
  if (
    cached?.format === FORMAT_VERSION &&
    cached.aptListsStamp === stamp &&
    stamp !== 0 &&
    cached.inputs.scriptsSha256 === scriptsSha256() &&
    complete(imagePaths(dir, cached))
  ) {
    return imagePaths(dir, cached);
  }
  let inputs: ImageManifest['inputs'];
  try {
    inputs = resolveInputsUpdatingLists();
  } catch (error) {
    if (cached && complete(imagePaths(dir, cached))) return imagePaths(dir, cached);
    throw error;
  }
  const same = cached?.format === FORMAT_VERSION;
  if (cached && same && JSON.stringify(cached.inputs) === JSON.stringify(inputs)) {
    const image = imagePaths(dir, cached);
    if (complete(image)) {
      // The lists changed but not the versions we use: remember that, to skip apt-cache again.
      const refreshed: ImageManifest = { ...cached, aptListsStamp: stamp };
      writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(refreshed, null, 2)}\n`);
      return image;
    }
  }
  return build(dir, inputs, opts.quiet ?? false);
}
