// A do-nothing "broker" for the latency floor (see client.c): accepts a publisher, then a consumer, on
// 127.0.0.1:PORT and forwards the publisher's bytes to the consumer, one epoll thread, blocking in epoll_wait
// between messages as an idle broker's event loop does. Usage: relay PORT
// When the publisher goes it prints its own CPU time per 1 KiB message relayed: the machine's floor for a broker's
// CPU per message at that rate (one wake-up, one read, one write per message).
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
  int port = atoi(argv[1]);
  int l = socket(AF_INET, SOCK_STREAM, 0); int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(0x7f000001);
  if (bind(l, (void*)&a, sizeof a) || listen(l, 8)) { perror("bind"); return 1; }
  int p = accept(l, 0, 0), c = accept(l, 0, 0);
  setsockopt(p, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int ep = epoll_create1(0); struct epoll_event ev = {.events = EPOLLIN, .data.fd = p}; epoll_ctl(ep, EPOLL_CTL_ADD, p, &ev);
  char buf[65536]; long long relayed = 0;
  for (;;) {
    struct epoll_event out; if (epoll_wait(ep, &out, 1, -1) < 1) continue;
    ssize_t n = read(p, buf, sizeof buf); if (n <= 0) break;
    for (ssize_t w = 0; w < n;) { ssize_t k = write(c, buf + w, n - w); if (k <= 0) return 0; w += k; }
    relayed += n;
  }
  struct rusage u; getrusage(RUSAGE_SELF, &u);
  double cpu_us = (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
  printf("cpu_us_per_msg=%.2f\n", relayed >= 1024 ? cpu_us / (relayed / 1024) : 0);
  return 0;
}
