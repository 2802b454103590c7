/*
 * Connection load generator for bench/connections.ts: opens COUNT WebSocket connections to
 * 127.0.0.1:PORT PATH, BATCH at a time (each batch fully upgraded before the next), and prints
 * one JSON line: how many, how long, and its own CPU time. Then it keeps every connection open,
 * reading and discarding what the server sends, until its stdin closes.
 *
 * A Deno generator spent a whole core on client-side work (TCP setup, handshake, one event per
 * frame) while the server's core sat idle: it measured itself. This one costs a few
 * microseconds per connection, so the server is the limit.
 *
 *     cc -O2 -o /tmp/natter-connect bench/connect.c && /tmp/natter-connect 8080 /?room=x 5000 100
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

struct conn {
  int fd;
  int state; /* 0 connecting, 1 waiting for 101, 2 open */
  int seen;  /* bytes of the response head matched so far ("\r\n\r\n") */
};

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s PORT PATH COUNT BATCH\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]);
  const char *path = argv[2];
  int count = atoi(argv[3]);
  int batch = atoi(argv[4]);
  char request[1024];
  int length = snprintf(request, sizeof request,
                        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n",
                        path, port);
  struct sockaddr_in address = {0};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct conn *conns = calloc(count, sizeof *conns);
  int epoll = epoll_create1(0);
  struct epoll_event events[256];
  char scratch[65536];
  double cpu0 = cpu(), t0 = now();
  int opened = 0, failed = 0;
  for (int start = 0; start < count; start += batch) {
    int end = start + batch < count ? start + batch : count;
    int pending = end - start;
    for (int i = start; i < end; i++) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      conns[i].fd = fd;
      if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        failed++, pending--, conns[i].state = -1;
        close(fd);
        continue;
      }
      struct epoll_event event = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (unsigned)i};
      epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
    }
    while (pending > 0) {
      int n = epoll_wait(epoll, events, 256, 10000);
      if (n <= 0) {
        fprintf(stderr, "timed out waiting for upgrades (%d pending)\n", pending);
        return 1;
      }
      for (int k = 0; k < n; k++) {
        struct conn *c = &conns[events[k].data.u32];
        if (c->state == 0 && (events[k].events & EPOLLOUT)) {
          if (write(c->fd, request, length) != length) {
            c->state = -1, failed++, pending--;
            continue;
          }
          c->state = 1;
          struct epoll_event event = {.events = EPOLLIN, .data.u32 = events[k].data.u32};
          epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &event);
        } else if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
          ssize_t got = read(c->fd, scratch, sizeof scratch);
          if (got <= 0) {
            if (c->state == 1) failed++, pending--;
            c->state = -1;
            epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
            continue;
          }
          if (c->state != 1) continue;
          if (strncmp(scratch, "HTTP/1.1 101", 12) != 0 && c->seen == 0) {
            c->state = -1, failed++, pending--;
            continue;
          }
          /* The head ends with \r\n\r\n; frames may follow in the same read. */
          for (ssize_t j = 0; j < got && c->state == 1; j++) {
            const char *end_of_head = "\r\n\r\n";
            c->seen = scratch[j] == end_of_head[c->seen] ? c->seen + 1 : (scratch[j] == '\r');
            if (c->seen == 4) c->state = 2, opened++, pending--;
          }
        }
      }
    }
  }
  double seconds = now() - t0;
  printf("{\"opened\":%d,\"failed\":%d,\"seconds\":%.6f,\"cpuSeconds\":%.6f}\n", opened, failed, seconds,
         cpu() - cpu0);
  fflush(stdout);
  /* Keep reading (and discarding) until stdin closes. */
  struct epoll_event stdin_event = {.events = EPOLLIN, .data.u32 = 0xffffffffu};
  epoll_ctl(epoll, EPOLL_CTL_ADD, 0, &stdin_event);
  while (1) {
    int n = epoll_wait(epoll, events, 256, -1);
    for (int k = 0; k < n; k++) {
      if (events[k].data.u32 == 0xffffffffu) {
        if (read(0, scratch, sizeof scratch) <= 0) return 0;
        continue;
      }
      struct conn *c = &conns[events[k].data.u32];
      if (read(c->fd, scratch, sizeof scratch) <= 0) epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
    }
  }
}
