// The latency floor of this machine's loopback, for Benchmarks/compare.sh: a publisher thread sends 1 KiB messages
// carrying their send time at a fixed rate through relay.c; the consumer (this thread) reads them and reports
// percentiles of the end-to-end latency. Same shape as `warren perf --rate`: two wakeups per message (the relay's and
// the consumer's), without any AMQP, broker work, Swift or SwiftNIO.
// Usage: client PORT COUNT RATE   (prints one line: p50, p75, p99, p99.9, max in microseconds)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static int port, count, rate;
static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static int conn(void) {
  struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(0x7f000001);
  for (int attempt = 0; attempt < 100; attempt++) {  // the relay may still be starting: retry for up to 5 s
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (connect(s, (void*)&a, sizeof a) == 0) { setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); return s; }
    close(s); usleep(50000);
  }
  perror("connect"); exit(1);
}
static int ps, cs;
static void *pub(void *x) {
  char m[1024] = {0}; struct timespec next; clock_gettime(CLOCK_MONOTONIC, &next);
  for (int i = 0; i < count; i++) {
    next.tv_nsec += 1000000000L / rate; if (next.tv_nsec >= 1000000000L) { next.tv_sec++; next.tv_nsec -= 1000000000L; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, 0);
    long long t = now(); memcpy(m, &t, 8); if (write(ps, m, sizeof m) != sizeof m) exit(1);
  }
  return 0;
}
static int cmp(const void *a, const void *b) { long long x = *(long long*)a, y = *(long long*)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: client PORT COUNT RATE\n"); return 2; }
  port = atoi(argv[1]); count = atoi(argv[2]); rate = atoi(argv[3]);
  ps = conn(); usleep(100000); cs = conn();
  long long *lat = malloc(sizeof(long long) * count);
  pthread_t t; pthread_create(&t, 0, pub, 0);
  char m[1024];
  for (int i = 0; i < count; i++) {
    size_t got = 0;
    while (got < sizeof m) { ssize_t n = read(cs, m + got, sizeof m - got); if (n <= 0) exit(1); got += n; }
    long long s; memcpy(&s, m, 8); lat[i] = now() - s;
  }
  qsort(lat, count, sizeof *lat, cmp);
  printf("p50_us=%lld p75_us=%lld p99_us=%lld p999_us=%lld max_us=%lld\n", lat[count/2]/1000, lat[count*3/4]/1000,
         lat[count*99/100]/1000, lat[(long long)count*999/1000]/1000, lat[count-1]/1000);
}
