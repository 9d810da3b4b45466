// Which call makes appended bytes durable fastest here: fdatasync on the file, fsync, syncfs on its file system, or
// writes through O_DSYNC. Appends `size` bytes then syncs, `count` times, in a fresh file in DIR; prints the mean
// and p99 microseconds per append+sync for each. The last two rows write into a file whose blocks exist already
// (zero-filled and synced first, or fallocated), where fdatasync has no file size or allocation to log.
// Usage: sync-calls DIR [size] [count]
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// prepare: 0 append to an empty file, 1 overwrite a zero-filled synced file, 2 overwrite a fallocated one
static void run(const char *dir, const char *name, int extra_flags, int method, int prepare, size_t size, int count) {
  char path[4096];
  snprintf(path, sizeof path, "%s/sync-calls-%s.tmp", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (prepare ? 0 : O_APPEND) | extra_flags, 0600);
  if (fd < 0) { perror(path); exit(1); }
  char *buffer = malloc(size);
  if (prepare == 1) {
    memset(buffer, 0, size);
    for (int i = 0; i < count; i++)
      if (write(fd, buffer, size) != (ssize_t)size) { perror("write"); exit(1); }
    if (fsync(fd) != 0) { perror("fsync"); exit(1); }
    lseek(fd, 0, SEEK_SET);
  } else if (prepare == 2) {
    if (fallocate(fd, 0, 0, (off_t)size * count) != 0) { perror("fallocate"); exit(1); }
    if (fsync(fd) != 0) { perror("fsync"); exit(1); }
  }
  memset(buffer, 'x', size);
  double *samples = malloc(sizeof(double) * count);
  for (int i = 0; i < count; i++) {
    double start = now_us();
    if (write(fd, buffer, size) != (ssize_t)size) { perror("write"); exit(1); }
    int rc = 0;
    if (method == 0) rc = fdatasync(fd);
    else if (method == 1) rc = fsync(fd);
    else if (method == 2) rc = syncfs(fd);
    if (rc != 0) { perror("sync"); exit(1); }
    samples[i] = now_us() - start;
  }
  double total = 0;
  for (int i = 0; i < count; i++) total += samples[i];
  qsort(samples, count, sizeof(double), compare);
  printf("%-10s %8zu B  mean %8.1f us  p50 %8.1f us  p99 %8.1f us\n", name, size, total / count, samples[count / 2],
         samples[count * 99 / 100]);
  close(fd);
  unlink(path);
  free(buffer);
  free(samples);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s DIR [size] [count]\n", argv[0]); return 2; }
  size_t size = argc > 2 ? strtoul(argv[2], 0, 10) : 65536;
  int count = argc > 3 ? atoi(argv[3]) : 500;
  run(argv[1], "fdatasync", 0, 0, 0, size, count);
  run(argv[1], "fsync", 0, 1, 0, size, count);
  run(argv[1], "syncfs", 0, 2, 0, size, count);
  run(argv[1], "O_DSYNC", O_DSYNC, 3, 0, size, count);
  run(argv[1], "zeroed", 0, 0, 1, size, count);
  run(argv[1], "fallocated", 0, 0, 2, size, count);
  return 0;
}
