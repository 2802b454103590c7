/*
 * Client load generator for bench/connections.ts and bench/fanout.ts: opens COUNT WebSocket
 * connections to 127.0.0.1:PORT PATH, BATCH at a time (each batch fully upgraded before the
 * next), and prints one JSON line: how many, how long, and its own CPU time. Then it keeps every
 * connection open, walking the frames the server sends and counting the lines (events) in text
 * frames; each line on its stdin asks for a report ({"lines":N,"cpuSeconds":S}); it exits when
 * its stdin closes.
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
  unsigned char header[10];
  int header_length;
  unsigned long long remaining; /* payload bytes still to come in the current frame */
  int text;                     /* whether the current frame is a text frame */
};

static unsigned long long lines = 0;

/* Walks frames in data: headers (possibly split across reads), then newlines in text payloads. */
static void consume(struct conn *c, const unsigned char *data, size_t n) {
  size_t at = 0;
  while (at < n) {
    if (c->remaining > 0) {
      size_t take = n - at < c->remaining ? n - at : (size_t)c->remaining;
      if (c->text) {
        const unsigned char *p = data + at, *end = data + at + take;
        while ((p = memchr(p, '\n', end - p)) != NULL) lines++, p++;
      }
      c->remaining -= take;
      at += take;
      continue;
    }
    while (at < n && c->header_length < 10) c->header[c->header_length++] = data[at++];
    int need = 2;
    if (c->header_length >= 2) {
      int length = c->header[1] & 0x7f;
      need = length == 126 ? 4 : length == 127 ? 10 : 2;
    }
    if (c->header_length < need) return;
    /* Give back what was taken beyond this header: it is payload or the next frame. */
    at -= c->header_length - need;
    int opcode = c->header[0] & 0x0f;
    unsigned long long length = c->header[1] & 0x7f;
    if (length == 126) length = ((unsigned)c->header[2] << 8) | c->header[3];
    if (length == 127) {
      length = 0;
      for (int i = 2; i < 10; i++) length = (length << 8) | c->header[i];
    }
    c->header_length = 0;
    c->text = opcode == 1;
    if (c->text) lines++; /* one event per line: its newlines, plus one */
    c->remaining = length;
  }
}

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
  struct epoll_event events[1024];
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
            if (c->seen == 4) {
              c->state = 2, opened++, pending--;
              consume(c, (unsigned char *)scratch + j + 1, got - j - 1);
            }
          }
        }
      }
    }
  }
  double seconds = now() - t0;
  printf("{\"opened\":%d,\"failed\":%d,\"seconds\":%.6f,\"cpuSeconds\":%.6f}\n", opened, failed, seconds,
         cpu() - cpu0);
  fflush(stdout);
  /* Keep reading and counting until stdin closes; report on each line of stdin. */
  struct epoll_event stdin_event = {.events = EPOLLIN, .data.u32 = 0xffffffffu};
  epoll_ctl(epoll, EPOLL_CTL_ADD, 0, &stdin_event);
  while (1) {
    /* Let a few milliseconds of frames gather per socket: one read then takes many small frames
       (the reference sends one per event) rather than one, so counting costs little. */
    usleep(5000);
    int n = epoll_wait(epoll, events, 1024, -1);
    for (int k = 0; k < n; k++) {
      if (events[k].data.u32 == 0xffffffffu) {
        ssize_t got = read(0, scratch, sizeof scratch);
        if (got <= 0) return 0;
        for (ssize_t j = 0; j < got; j++) {
          if (scratch[j] == '\n') printf("{\"lines\":%llu,\"cpuSeconds\":%.6f}\n", lines, cpu());
        }
        fflush(stdout);
        continue;
      }
      struct conn *c = &conns[events[k].data.u32];
      ssize_t got = read(c->fd, scratch, sizeof scratch);
      if (got <= 0) epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
      else consume(c, (unsigned char *)scratch, got);
    }
  }
}
