/*
 * The test guest's disk workload (switch flotilla:diskbench=N), compiled static into its
 * initramfs by scripts/build-test-guest.sh: on a block device, with O_DIRECT and one request at
 * a time, N MiB written then read in 1 MiB requests from offset 0, then 4 KiB reads at
 * pseudo-random aligned offsets in what was written. Busybox has no tool that does random reads
 * in one process, and fio with its libraries would outweigh the whole guest.
 * Prints: seq-write=<MiB/s> seq-read=<MiB/s> rand-read-4k=<IOPS>
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1L << 20)
#define BLOCK 4096L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int fail(const char *what) {
  perror(what);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: diskbench DEVICE MIB RANDOM-READS\n");
    return 2;
  }
  long mib = atol(argv[2]), reads = atol(argv[3]);
  int fd = open(argv[1], O_RDWR | O_DIRECT);
  if (fd < 0) return fail(argv[1]);
  void *buf;
  if (posix_memalign(&buf, BLOCK, MIB)) return fail("posix_memalign");
  memset(buf, 0x5a, MIB);

  double start = now();
  for (long i = 0; i < mib; i++)
    if (pwrite(fd, buf, MIB, i * MIB) != MIB) return fail("write");
  if (fdatasync(fd)) return fail("fdatasync");
  double written = now();
  for (long i = 0; i < mib; i++)
    if (pread(fd, buf, MIB, i * MIB) != MIB) return fail("read");
  double read = now();
  uint64_t x = 0x9e3779b97f4a7c15ULL; /* xorshift64: the same offsets every run */
  long blocks = mib * MIB / BLOCK;
  for (long i = 0; i < reads; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if (pread(fd, buf, BLOCK, (off_t)(x % blocks) * BLOCK) != BLOCK) return fail("random read");
  }
  double done = now();
  printf("seq-write=%.1f seq-read=%.1f rand-read-4k=%.0f\n", mib / (written - start), mib / (read - written), reads / (done - read));
  return 0;
}
