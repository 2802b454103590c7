// fanout.c - independent WebSocket fan-out load generator (epoll, single thread).
//
// Connects R receivers + 1 sender to ws://127.0.0.1:PORT/?room=bench, then the sender keeps W
// 64-byte stamped text messages in flight (refill on arrival at receiver #0, the first receiver
// connected), or with --rate N sends N messages/s on a timer. Every receiver parses every frame
// and counts stamped lines. Prints one JSON line.
//
// Payload: "@S<seq, 8 digits>T<ns>Z" padded with 'x' to 64 bytes (ns = CLOCK_MONOTONIC at send).
//
// cc -O2 -o fanout fanout.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_HS_SENT, ST_OPEN, ST_CLOSED };

typedef struct {
  int fd;
  int idx;      // 0..R-1 receivers, R = sender
  int state;
  uint8_t *buf; // unparsed bytes
  size_t len, cap;
  uint8_t *msg; // fragmented message accumulation
  size_t mlen, mcap;
  int in_frag;
} conn_t;

static int VERIFY_EVERY = 16;
static int R = 2, W = 1, S = 5, PORT = 0, SERVER_PID = 0;
static double WARMUP = 1.0, SETTLE = 1.0, DRAIN_MAX = 5.0, RATE = 0;
static const char *LABEL = "";
static conn_t *conns;
static int NC;
static int epfd;
static int ep_slow = -1;

// stats
static uint64_t sent = 0;        // messages sent (seq = 0..sent-1)
static uint64_t deliveries = 0;  // stamped lines counted across all receivers
static uint64_t r0_frames = 0, r0_stamped_frames = 0, r0_lines = 0, r0_stamped = 0;
static uint64_t bytes_in = 0, reads = 0, malformed = 0;
static uint64_t bogus = 0, closes = 0, errors_ = 0, pings = 0;
static uint16_t *seqcount;       // deliveries per seq
static size_t seqcap;
static int measuring = 0;
static double *lat;              // latency samples (us) in measured interval
static size_t nlat, latcap;
static uint64_t refill_due = 0;
static int sending = 0;

// sender output
static uint8_t *obuf;
static size_t olen, ocap, ooff;
static int sender_wantout = 0;

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *m) { perror(m); exit(1); }

static void ensure(uint8_t **b, size_t *cap, size_t need) {
  if (need <= *cap) return;
  size_t n = *cap ? *cap : 4096;
  while (n < need) n *= 2;
  *b = realloc(*b, n);
  if (!*b) die("realloc");
  *cap = n;
}

static void seq_bump(uint64_t seq) {
  if (seq >= seqcap) {
    size_t n = seqcap ? seqcap : 1 << 16;
    while (n <= seq) n *= 2;
    seqcount = realloc(seqcount, n * sizeof(uint16_t));
    memset(seqcount + seqcap, 0, (n - seqcap) * sizeof(uint16_t));
    seqcap = n;
  }
  seqcount[seq]++;
}

static const uint8_t MASK[4] = {0x37, 0xa1, 0x5c, 0xe2};

// append one masked client frame to out buffer
static void put_frame(uint8_t **b, size_t *len, size_t *cap, int opcode, const uint8_t *p, size_t n) {
  ensure(b, cap, *len + n + 14);
  uint8_t *o = *b + *len;
  size_t h = 0;
  o[h++] = 0x80 | opcode;
  if (n < 126) o[h++] = 0x80 | n;
  else if (n < 65536) { o[h++] = 0x80 | 126; o[h++] = n >> 8; o[h++] = n & 255; }
  else { o[h++] = 0x80 | 127; for (int i = 7; i >= 0; i--) o[h++] = (n >> (8 * i)) & 255; }
  memcpy(o + h, MASK, 4); h += 4;
  for (size_t i = 0; i < n; i++) o[h + i] = p[i] ^ MASK[i & 3];
  *len += h + n;
}

static void queue_message(void) {
  uint8_t p[64];
  int k = snprintf((char *)p, sizeof p, "@S%08lluT%lluZ", (unsigned long long)sent, (unsigned long long)now_ns());
  memset(p + k, 'x', 64 - k);
  put_frame(&obuf, &olen, &ocap, 1, p, 64);
  sent++;
}

static void flush_sender(void) {
  conn_t *c = &conns[R];
  while (ooff < olen) {
    ssize_t w = write(c->fd, obuf + ooff, olen - ooff);
    if (w < 0) {
      if (errno == EAGAIN) break;
      errors_++; perror("sender write"); exit(2);
    }
    ooff += w;
  }
  if (ooff == olen) { ooff = olen = 0; }
  int want = ooff < olen;
  if (want != sender_wantout) {
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = R};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    sender_wantout = want;
  }
}

static void write_small(conn_t *c, int opcode, const uint8_t *p, size_t n) {
  uint8_t *b = NULL; size_t l = 0, cap = 0;
  put_frame(&b, &l, &cap, opcode, p, n);
  if (c->idx == R) { // keep ordering with the sender stream
    ensure(&obuf, &ocap, olen + l); memcpy(obuf + olen, b, l); olen += l;
  } else {
    ssize_t w = write(c->fd, b, l);
    if (w != (ssize_t)l) errors_++;
  }
  free(b);
}

static inline uint64_t parse_u(const uint8_t **pp, const uint8_t *e) {
  uint64_t v = 0; const uint8_t *p = *pp;
  while (p < e && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
  *pp = p; return v;
}

static inline int seq8(const uint8_t *q, uint64_t *out) {
  uint64_t v;
  memcpy(&v, q, 8);
  uint64_t d = v - 0x3030303030303030ull;
  // every byte must be 0..9: no borrow below '0', and d+6 must not carry into bit 4
  if ((v & 0xf0f0f0f0f0f0f0f0ull) != 0x3030303030303030ull) return 0;
  if (((d + 0x0606060606060606ull) & 0xf0f0f0f0f0f0f0f0ull) != 0) return 0;
  // combine: little-endian, first char is most significant
  d = (d * 10 + (d >> 8)) & 0x00ff00ff00ff00ffull;
  d = (d * 100 + (d >> 16)) & 0x0000ffff0000ffffull;
  d = (d * 10000 + (d >> 32)) & 0xffffffffull;
  *out = d;
  return 1;
}

static inline void got(uint64_t seq) {
  if (seq >= sent) { bogus++; return; }
  seq_bump(seq);
}

// process a complete text message payload.
// Receiver 0: split into lines (for lines/frame), parse seq and timestamp of each stamped line.
// Other receivers: find each '@S' stamp, check and count it, then skip the 64-byte payload.
static void on_text(conn_t *c, const uint8_t *p, size_t n, uint64_t tnow) {
  if (c->idx == R) return; // sender: ignore content
  const uint8_t *e = p + n;
  uint64_t stamped = 0;
  if (c->idx != 0) {
    int verify = c->idx % VERIFY_EVERY == 0;
    while (p < e) {
      const uint8_t *m = memchr(p, '@', e - p);
      if (!m) break;
      uint64_t seq;
      if (e - m >= 64 && m[1] == 'S' && m[10] == 'T' && m[63] == 'x' && (!verify || seq8(m + 2, &seq))) {
        stamped++;
        if (verify) got(seq);
        p = m + 64;
      } else {
        if (e - m >= 2 && m[1] == 'S') malformed++;
        p = m + 1;
      }
    }
    deliveries += stamped;
    return;
  }
  uint64_t lines = 0;
  while (p < e) {
    const uint8_t *nl = memchr(p, '\n', e - p);
    const uint8_t *le = nl ? nl : e;
    lines++;
    const uint8_t *m = memmem(p, le - p, "@S", 2);
    uint64_t seq;
    if (m && le - m >= 64 && m[10] == 'T' && m[63] == 'x' && seq8(m + 2, &seq)) {
      const uint8_t *q = m + 11;
      uint64_t ts = parse_u(&q, le);
      stamped++;
      got(seq);
      if (sending) refill_due++;
      if (measuring) {
        if (nlat == latcap) { latcap = latcap ? latcap * 2 : 1 << 16; lat = realloc(lat, latcap * sizeof(double)); }
        lat[nlat++] = (double)(tnow - ts) / 1000.0;
      }
    } else if (m) malformed++;
    p = nl ? nl + 1 : e;
  }
  deliveries += stamped;
  r0_frames++;
  r0_lines += lines;
  r0_stamped += stamped;
  if (stamped) r0_stamped_frames++;
}

static void close_conn(conn_t *c, const char *why) {
  if (c->state == ST_CLOSED) return;
  fprintf(stderr, "conn %d closed: %s\n", c->idx, why);
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  if (ep_slow >= 0) epoll_ctl(ep_slow, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->state = ST_CLOSED;
  closes++;
}

// parse frames in c->buf
static void parse(conn_t *c, uint64_t tnow) {
  size_t off = 0;
  uint8_t *b = c->buf;
  while (c->len - off >= 2) {
    uint8_t *h = b + off;
    int fin = h[0] & 0x80, op = h[0] & 0x0f;
    int masked = h[1] & 0x80;
    uint64_t n = h[1] & 0x7f;
    size_t hl = 2;
    if (n == 126) {
      if (c->len - off < 4) break;
      n = ((uint64_t)h[2] << 8) | h[3]; hl = 4;
    } else if (n == 127) {
      if (c->len - off < 10) break;
      n = 0; for (int i = 0; i < 8; i++) n = (n << 8) | h[2 + i]; hl = 10;
    }
    if (masked) hl += 4;
    if (c->len - off < hl + n) {
      ensure(&c->buf, &c->cap, hl + n + 16); // make room for the whole frame
      b = c->buf;
      break;
    }
    uint8_t *p = b + off + hl;
    if (masked) { errors_++; }
    if (op == 1 || op == 2 || op == 0) {
      if (op != 0 && fin) on_text(c, p, n, tnow);
      else {
        ensure(&c->msg, &c->mcap, c->mlen + n);
        memcpy(c->msg + c->mlen, p, n); c->mlen += n;
        if (fin) { on_text(c, c->msg, c->mlen, tnow); c->mlen = 0; }
      }
    } else if (op == 9) { pings++; write_small(c, 10, p, n); }
    else if (op == 8) { close_conn(c, "close frame"); return; }
    off += hl + n;
  }
  if (off) { memmove(c->buf, c->buf + off, c->len - off); c->len -= off; }
}

static void do_read(conn_t *c) {
  for (;;) {
    if (c->cap - c->len < 16384) ensure(&c->buf, &c->cap, c->len + 65536);
    ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      errors_++; close_conn(c, strerror(errno)); return;
    }
    if (r == 0) { close_conn(c, "eof"); return; }
    size_t space = c->cap - c->len;
    c->len += r;
    bytes_in += r;
    reads++;
    uint64_t t = c->idx == 0 ? now_ns() : 0;
    if (c->state == ST_HS_SENT) {
      uint8_t *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
      if (!e) continue;
      if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "conn %d: bad handshake: %.*s\n", c->idx, (int)(e - c->buf), c->buf);
        exit(3);
      }
      size_t hl = e + 4 - c->buf;
      memmove(c->buf, c->buf + hl, c->len - hl); c->len -= hl;
      c->state = ST_OPEN;
    }
    parse(c, t);
    if (c->state == ST_CLOSED) return;
    if ((size_t)r < space) return; // drained
  }
}

static uint64_t proc_ticks(int pid) {
  if (!pid) return 0;
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  p += 2; // state field
  unsigned long long ut = 0, st = 0;
  // fields after ')' : state(3) ppid(4) ... utime(14) stime(15)
  int field = 3;
  char *tok = strtok(p, " ");
  while (tok) {
    if (field == 14) ut = strtoull(tok, NULL, 10);
    if (field == 15) { st = strtoull(tok, NULL, 10); break; }
    tok = strtok(NULL, " "); field++;
  }
  return ut + st;
}

static double self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int start_connect(conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
  a.sin_addr.s_addr = htonl(0x7f000001);
  int r = connect(fd, (struct sockaddr *)&a, sizeof a);
  if (r < 0 && errno != EINPROGRESS) die("connect");
  c->fd = fd;
  c->state = ST_CONNECTING;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = c->idx};
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  return fd;
}

static void send_handshake(conn_t *c) {
  int err = 0; socklen_t el = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
  if (err) { fprintf(stderr, "connect %d: %s\n", c->idx, strerror(err)); exit(3); }
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET /?room=bench HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n", PORT);
  if (write(c->fd, req, n) != n) die("handshake write");
  c->state = ST_HS_SENT;
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = c->idx};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static int pump_on(int ep, int timeout_ms) {
  struct epoll_event evs[512];
  int n = epoll_wait(ep, evs, 512, timeout_ms);
  for (int i = 0; i < n; i++) {
    uint32_t k = evs[i].data.u32;
    if (k == UINT32_MAX) continue; // timer, handled by caller
    conn_t *c = &conns[k];
    if (c->state == ST_CLOSED) continue;
    if (c->state == ST_CONNECTING) {
      if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) send_handshake(c);
      continue;
    }
    if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) do_read(c);
    if (k == (uint32_t)R && (evs[i].events & EPOLLOUT)) flush_sender();
  }
  return n;
}

// Receivers other than receiver 0 sit in ep_slow after setup and are read at most once every
// DEFER_MS (all that is queued), which keeps the generator's read count per delivery low.
static uint64_t next_slow = 0;
static double DEFER_MS = 10;
static uint64_t slow_rounds = 0;

static void service_slow(int force) {
  if (ep_slow < 0) return;
  uint64_t t = now_ns();
  if (!force && t < next_slow) return;
  // one pass: at most enough epoll_wait calls to cover every slow receiver once
  for (int k = 0; k < (R + 511) / 512; k++) if (pump_on(ep_slow, 0) < 512) break;
  next_slow = t + (uint64_t)(DEFER_MS * 1e6);
  slow_rounds++;
}

static void pump(int timeout_ms) {
  if (ep_slow >= 0) {
    uint64_t t = now_ns();
    int until = next_slow > t ? (int)((next_slow - t + 999999) / 1000000) : 0;
    if (until < timeout_ms) timeout_ms = until;
  }
  pump_on(epfd, timeout_ms);
  service_slow(0);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : "0";
    if (!strcmp(a, "--port")) PORT = atoi(v), i++;
    else if (!strcmp(a, "--receivers")) R = atoi(v), i++;
    else if (!strcmp(a, "--window")) W = atoi(v), i++;
    else if (!strcmp(a, "--seconds")) S = atoi(v), i++;
    else if (!strcmp(a, "--warmup")) WARMUP = atof(v), i++;
    else if (!strcmp(a, "--settle")) SETTLE = atof(v), i++;
    else if (!strcmp(a, "--drain")) DRAIN_MAX = atof(v), i++;
    else if (!strcmp(a, "--rate")) RATE = atof(v), i++;
    else if (!strcmp(a, "--server-pid")) SERVER_PID = atoi(v), i++;
    else if (!strcmp(a, "--verify-every")) VERIFY_EVERY = atoi(v), i++;
    else if (!strcmp(a, "--defer-ms")) DEFER_MS = atof(v), i++;
    else if (!strcmp(a, "--label")) LABEL = v, i++;
    else { fprintf(stderr, "unknown arg %s\n", a); return 1; }
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  NC = R + 1;
  conns = calloc(NC, sizeof(conn_t));
  epfd = epoll_create1(0);
  for (int i = 0; i < NC; i++) conns[i].idx = i, conns[i].fd = -1;

  // 1. connect: receivers in order (receiver 0 first), sender last; <= 64 handshakes pending
  uint64_t t0 = now_ns();
  int next = 0;
  for (;;) {
    int pending = 0, open = 0;
    for (int i = 0; i < next; i++) {
      if (conns[i].state == ST_OPEN) open++;
      else if (conns[i].state != ST_CLOSED) pending++;
    }
    if (open == NC) break;
    if (closes) { fprintf(stderr, "connection closed during setup\n"); return 3; }
    while (pending < 64 && next < NC) {
      // the sender connects only once every receiver is upgraded
      if (next == R && open < R) break;
      start_connect(&conns[next++]); pending++;
    }
    pump(10);
    if (now_ns() - t0 > 60e9) { fprintf(stderr, "setup timeout (%d open)\n", open); return 3; }
  }
  double connect_s = (now_ns() - t0) / 1e9;
  // settle: at least SETTLE s, then until no bytes for 300 ms (max 20 s)
  uint64_t ts0 = now_ns();
  uint64_t last_r0 = r0_frames;
  uint64_t quiet_since = now_ns();
  for (;;) {
    uint64_t before = bytes_in;
    pump(20);
    uint64_t t = now_ns();
    if (bytes_in != before) quiet_since = t;
    (void)last_r0;
    if (t - ts0 > SETTLE * 1e9 && t - quiet_since > 300e6) break;
    if (t - ts0 > 20e9) break;
  }
  double settle_s = (now_ns() - ts0) / 1e9;
  if (DEFER_MS > 0 && R > 1) {
    ep_slow = epoll_create1(0);
    for (int i = 1; i < R; i++) {
      if (conns[i].state != ST_OPEN) continue;
      epoll_ctl(epfd, EPOLL_CTL_DEL, conns[i].fd, NULL);
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
      epoll_ctl(ep_slow, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
  }
  uint64_t pre_frames = r0_frames;

  // 2. send
  int tfd = -1;
  uint64_t interval_ns = 0;
  if (RATE > 0) {
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    interval_ns = (uint64_t)(1e9 / RATE);
    struct itimerspec its = {.it_interval = {interval_ns / 1000000000, interval_ns % 1000000000},
                             .it_value = {0, 1000}};
    timerfd_settime(tfd, 0, &its, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
  }
  sending = 1;
  if (RATE <= 0) {
    for (int i = 0; i < W; i++) queue_message();
    flush_sender();
  }
  uint64_t tstart = now_ns();
  uint64_t tmeas = tstart + (uint64_t)(WARMUP * 1e9);
  uint64_t tend = tmeas + (uint64_t)S * 1000000000ull;
  uint64_t rd0 = 0, by0 = 0, d0 = 0, f0 = 0, sf0 = 0, l0 = 0, sl0 = 0, sv0 = 0, sent0 = 0;
  double c0 = 0;
  uint64_t m_t0 = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (!measuring && t >= tmeas && m_t0 == 0) {
      measuring = 1; m_t0 = t;
      d0 = deliveries; f0 = r0_frames; sf0 = r0_stamped_frames; l0 = r0_lines; sl0 = r0_stamped;
      sent0 = sent; rd0 = reads; by0 = bytes_in; c0 = self_cpu(); sv0 = proc_ticks(SERVER_PID);
    }
    if (measuring && t >= tend) break;
    int to = RATE > 0 ? 2 : 5;
    pump(to);
    if (RATE > 0) {
      uint64_t exp = 0;
      if (read(tfd, &exp, sizeof exp) == sizeof exp) for (uint64_t i = 0; i < exp; i++) queue_message();
    } else {
      while (refill_due) { queue_message(); refill_due--; }
    }
    if (olen) flush_sender();
  }
  uint64_t m_t1 = now_ns();
  measuring = 0;
  uint64_t rd1 = reads, by1 = bytes_in;
  uint64_t d1 = deliveries, f1 = r0_frames, sf1 = r0_stamped_frames, l1 = r0_lines, sl1 = r0_stamped, sent1 = sent;
  double c1 = self_cpu();
  uint64_t sv1 = proc_ticks(SERVER_PID);
  sending = 0; refill_due = 0;
  if (tfd >= 0) { epoll_ctl(epfd, EPOLL_CTL_DEL, tfd, NULL); close(tfd); }
  if (olen) {
    uint64_t tw = now_ns();
    while (olen && now_ns() - tw < 2e9) { pump(5); flush_sender(); }
  }

  // 3. drain: until every sent message counted R times, or DRAIN_MAX
  uint64_t expect = sent * (uint64_t)R;
  uint64_t td = now_ns();
  while (deliveries < expect && now_ns() - td < DRAIN_MAX * 1e9) pump(10);
  // a little more, to catch duplicates
  uint64_t tx = now_ns();
  while (now_ns() - tx < 100e6) pump(10);
  double drain_s = (now_ns() - td) / 1e9;

  // per-message check on the verified receivers (receiver 0 and every VERIFY_EVERY-th)
  unsigned RV = 0;
  for (int i = 0; i < R; i++) RV += (i == 0 || i % VERIFY_EVERY == 0);
  uint64_t lost = 0, dup = 0, short_msgs = 0, over_msgs = 0;
  for (uint64_t s = 0; s < sent; s++) {
    unsigned cnt = s < seqcap ? seqcount[s] : 0;
    if (cnt < RV) { lost += RV - cnt; short_msgs++; }
    else if (cnt > RV) { dup += cnt - RV; over_msgs++; }
  }
  int open_at_end = 0;
  for (int i = 0; i < NC; i++) open_at_end += conns[i].state == ST_OPEN;

  double wall = (m_t1 - m_t0) / 1e9;
  double p50 = 0, p99 = 0, pmax = 0;
  if (nlat) {
    qsort(lat, nlat, sizeof(double), cmpd);
    p50 = lat[(size_t)(0.50 * (nlat - 1))];
    p99 = lat[(size_t)(0.99 * (nlat - 1))];
    pmax = lat[nlat - 1];
  }
  long hz = sysconf(_SC_CLK_TCK);
  double scpu = SERVER_PID ? (double)(sv1 - sv0) / hz : 0;
  uint64_t dd = d1 - d0;
  printf("{\"label\":\"%s\",\"receivers\":%d,\"window\":%d,\"rate\":%.0f,\"seconds\":%.3f,"
         "\"deliveries\":%llu,\"deliveries_per_s\":%.0f,\"sent_in_interval\":%llu,\"msgs_per_s\":%.1f,"
         "\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"lat_samples\":%zu,"
         "\"r0_frames_per_s\":%.1f,\"r0_lines_per_frame\":%.3f,\"r0_stamped_lines_per_stamped_frame\":%.3f,"
         "\"gen_cpu_share\":%.4f,\"server_pid\":%d,\"server_cpu_s\":%.2f,\"server_cpu_share\":%.4f,"
         "\"server_cpu_s_per_M\":%.4f,"
         "\"total_sent\":%llu,\"expected\":%llu,\"counted\":%llu,\"verified_receivers\":%u,\"lost\":%llu,\"dup\":%llu,"
         "\"msgs_short\":%llu,\"msgs_over\":%llu,\"bogus\":%llu,\"closes\":%llu,\"errors\":%llu,\"pings\":%llu,"
         "\"defer_ms\":%.1f,\"open_at_end\":%d,\"malformed\":%llu,\"reads_per_s\":%.0f,\"bytes_per_read\":%.0f,\"connect_s\":%.2f,\"settle_s\":%.2f,\"pre_frames_r0\":%llu,\"drain_s\":%.2f}\n",
         LABEL, R, W, RATE, wall, (unsigned long long)dd, dd / wall, (unsigned long long)(sent1 - sent0),
         (sent1 - sent0) / wall, p50, p99, pmax, nlat, (f1 - f0) / wall,
         f1 > f0 ? (double)(sl1 - sl0) / (f1 - f0) : 0, sf1 > sf0 ? (double)(sl1 - sl0) / (sf1 - sf0) : 0,
         (c1 - c0) / wall, SERVER_PID, scpu, scpu / wall, dd ? scpu / (dd / 1e6) : 0,
         (unsigned long long)sent, (unsigned long long)expect, (unsigned long long)deliveries,
         RV, (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)short_msgs,
         (unsigned long long)over_msgs, (unsigned long long)bogus, (unsigned long long)closes,
         (unsigned long long)errors_, (unsigned long long)pings, DEFER_MS, open_at_end, (unsigned long long)malformed, (rd1 - rd0) / wall, rd1 > rd0 ? (double)(by1 - by0) / (rd1 - rd0) : 0, connect_s, settle_s,
         (unsigned long long)pre_frames, drain_s);
  (void)l0; (void)l1;
  return 0;
}
