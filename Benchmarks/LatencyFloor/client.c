// The latency floor of this machine's loopback, for Benchmarks/compare.sh: a publisher thread sends 1 KiB messages
// carrying their send time at a fixed rate through relay.c; the consumer (this thread) reads them and reports
// percentiles of the end-to-end latency. Same shape as `warren perf --rate`: two wakeups per message (the relay's and
// the consumer's), without any AMQP, broker work, Swift or SwiftNIO.
// With `amqp` it speaks AMQP 0-9-1 to a broker instead (guest/guest, vhost /): the consumer declares an exclusive
// queue and consumes with no-ack, the publisher sends each message as basic.publish + header + body in one write to
// the default exchange. The same client, the same timing and the same threads measure the relay and the brokers, so
// the difference is the broker's.
// Usage: client PORT COUNT RATE [amqp]   (prints one line: p50, p75, p99, p99.9, max in microseconds)
#include <stdint.h>
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
#define SIZE 1024
static int port, count, rate, amqp;
static char queue[64];
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
static void readn(int s, unsigned char *p, size_t n) {
  for (size_t got = 0; got < n;) { ssize_t k = read(s, p + got, n - got); if (k <= 0) { fprintf(stderr, "connection closed\n"); exit(1); } got += k; }
}
static void writen(int s, const unsigned char *p, size_t n) { if (write(s, p, n) != (ssize_t)n) { perror("write"); exit(1); } }

// --- AMQP 0-9-1, just enough: frames are type, channel, size, payload, 0xCE.
static unsigned char frame[262144];
static unsigned char *put16(unsigned char *p, unsigned v) { p[0] = v >> 8; p[1] = v; return p + 2; }
static unsigned char *put32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; return p + 4; }
static unsigned char *put64(unsigned char *p, uint64_t v) { p = put32(p, v >> 32); return put32(p, (uint32_t)v); }
static unsigned char *shortstr(unsigned char *p, const char *s) { size_t n = strlen(s); *p++ = n; memcpy(p, s, n); return p + n; }
// Frames a payload that was written at out + 7, returns the end.
static unsigned char *framed(unsigned char *out, int type, int channel, unsigned char *end) {
  uint32_t size = end - (out + 7); out[0] = type; put16(out + 1, channel); put32(out + 3, size); *end = 0xCE; return end + 1;
}
static unsigned char *method(unsigned char *out, int channel, int class, int id, const unsigned char *args, size_t n) {
  unsigned char *p = put16(put16(out + 7, class), id); memcpy(p, args, n); return framed(out, 1, channel, p + n);
}
// Reads one frame; returns its type, the method's class and id for method frames.
static int next(int s, unsigned *class, unsigned *id, uint32_t *size) {
  unsigned char h[7]; readn(s, h, 7);
  *size = (uint32_t)h[3] << 24 | h[4] << 16 | h[5] << 8 | h[6];
  if (*size + 1 > sizeof frame) { fprintf(stderr, "frame too large\n"); exit(1); }
  readn(s, frame, *size + 1);
  if (h[0] == 1) { *class = frame[0] << 8 | frame[1]; *id = frame[2] << 8 | frame[3]; } else { *class = *id = 0; }
  if (h[0] == 1 && *class == 10 && *id == 50) { fprintf(stderr, "connection.close: %.*s\n", frame[6], frame + 7); exit(1); }
  if (h[0] == 1 && *class == 20 && *id == 40) { fprintf(stderr, "channel.close: %.*s\n", frame[6], frame + 7); exit(1); }
  return h[0];
}
static void expect(int s, unsigned class, unsigned id) {
  unsigned c, i; uint32_t n;
  do { next(s, &c, &i, &n); } while (!(c == class && i == id));
}
static void handshake(int s) {
  unsigned char out[512], a[256], *p;
  writen(s, (const unsigned char *)"AMQP\0\0\x09\x01", 8);
  expect(s, 10, 10);
  p = put32(a, 0); p = shortstr(p, "PLAIN"); p = put32(p, 12); memcpy(p, "\0guest\0guest", 12); p += 12; p = shortstr(p, "en_US");
  writen(s, out, method(out, 0, 10, 11, a, p - a) - out);
  expect(s, 10, 30);
  unsigned channelMax = frame[4] << 8 | frame[5];
  uint32_t frameMax = (uint32_t)frame[6] << 24 | frame[7] << 16 | frame[8] << 8 | frame[9];
  p = put16(a, channelMax); p = put32(p, frameMax); p = put16(p, 0);
  unsigned char *e = method(out, 0, 10, 31, a, p - a);
  p = shortstr(a, "/"); p = shortstr(p, ""); *p++ = 0;
  e = method(e, 0, 10, 40, a, p - a);
  writen(s, out, e - out);
  expect(s, 10, 41);
  a[0] = 0; writen(s, out, method(out, 1, 20, 10, a, 1) - out);
  expect(s, 20, 11);
}
static void consume(int s) {
  unsigned char out[512], a[256], *p;
  p = put16(a, 0); p = shortstr(p, queue); *p++ = 0x0C; p = put32(p, 0);  // exclusive, auto-delete
  writen(s, out, method(out, 1, 50, 10, a, p - a) - out);
  expect(s, 50, 11);
  p = put16(a, 0); p = shortstr(p, queue); p = shortstr(p, ""); *p++ = 0x02; p = put32(p, 0);  // no-ack
  writen(s, out, method(out, 1, 60, 20, a, p - a) - out);
  expect(s, 60, 21);
}
// The publish of one message: method, header and body frames, the send time at `*stamp`.
static size_t publish(unsigned char *out, unsigned char **stamp) {
  unsigned char a[256], *p;
  p = put16(a, 0); p = shortstr(p, ""); p = shortstr(p, queue); *p++ = 0;
  unsigned char *e = method(out, 1, 60, 40, a, p - a);
  p = put16(put16(e + 7, 60), 0); p = put64(p, SIZE); p = put16(p, 0);
  e = framed(e, 2, 1, p);
  memset(e + 7, 0, SIZE); *stamp = e + 7;
  return framed(e, 3, 1, e + 7 + SIZE) - out;
}

static int ps, cs;
static void *pub(void *x) {
  unsigned char m[SIZE + 256] = {0}, *stamp = m; size_t n = SIZE;
  if (amqp) n = publish(m, &stamp);
  struct timespec next; clock_gettime(CLOCK_MONOTONIC, &next);
  for (int i = 0; i < count; i++) {
    next.tv_nsec += 1000000000L / rate; if (next.tv_nsec >= 1000000000L) { next.tv_sec++; next.tv_nsec -= 1000000000L; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, 0);
    long long t = now(); memcpy(stamp, &t, 8); writen(ps, m, n);
  }
  return 0;
}
static int cmp(const void *a, const void *b) { long long x = *(long long*)a, y = *(long long*)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: client PORT COUNT RATE [amqp]\n"); return 2; }
  port = atoi(argv[1]); count = atoi(argv[2]); rate = atoi(argv[3]); amqp = argc > 4 && strcmp(argv[4], "amqp") == 0;
  snprintf(queue, sizeof queue, "latency-floor-%d", (int)getpid());
  long long *lat = malloc(sizeof(long long) * count);
  if (amqp) {
    cs = conn(); handshake(cs); consume(cs);
    ps = conn(); handshake(ps);
  } else {
    ps = conn(); usleep(100000); cs = conn();
  }
  pthread_t t; pthread_create(&t, 0, pub, 0);
  unsigned char m[SIZE];
  for (int i = 0; i < count; i++) {
    if (amqp) {
      unsigned c, id; uint32_t n;
      while (next(cs, &c, &id, &n) != 3) {}  // deliver and header frames, then the body
      memcpy(m, frame, 8);
    } else {
      readn(cs, m, SIZE);
    }
    long long s; memcpy(&s, m, 8); lat[i] = now() - s;
  }
  qsort(lat, count, sizeof *lat, cmp);
  printf("p50_us=%lld p75_us=%lld p99_us=%lld p999_us=%lld max_us=%lld\n", lat[count/2]/1000, lat[count*3/4]/1000,
         lat[count*99/100]/1000, lat[(long long)count*999/1000]/1000, lat[count-1]/1000);
}
