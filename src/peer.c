/* Who owns the server end of our connection to the forge.
 *
 * The threat: while the forge restarts, a CI job in the container (which
 * shares the host's network namespace) binds the forge's loopback port and
 * receives the admin token.  Before the first request on a connection the
 * caller asks here who owns the socket that answers it.
 *
 * Rules this file keeps:
 *  1. A uid comes from the kernel's record of the exact four-tuple: local
 *     end the server's address and port, remote end ours.  The reply is
 *     checked against that four-tuple again; the kernel's exact lookup
 *     falls back to a listener, and such a reply is not our connection.
 *  2. A uid the kernel writes for a socket that has no owner of its own is
 *     never the answer.  Netlink reports uid 0 for a request sock
 *     (SYN_RECV) and a TIME_WAIT sock; a socket its process closed has no
 *     owner left; older kernels (sock_i_uid(); 6.18 reports sk_uid) report
 *     0 for an established socket not yet accept()ed (no struct socket, no
 *     inode).  A connection still in the listener's queue answers with the
 *     listener's owner, found by the kernel's own listener lookup
 *     (netlink) or by every listening row that could have taken it
 *     agreeing (/proc).  A closing one answers nothing.
 *  3. Fail closed: a row that does not parse, a reply that does not match,
 *     owners that disagree are errors, never a uid.
 *  4. Netlink answers are taken from the kernel only (nl_pid 0), with our
 *     sequence number, untruncated.
 *  5. No logging, no exit, nothing secret here; every fd is O_CLOEXEC.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "peer.h"

/* What the kernel says about one socket. */
struct peer_sock {
	int state; /* TCP_* */
	uid_t uid;
	unsigned long inode; /* 0: no struct socket (queued, closed, or not a full socket) */
};

/* judge_connection(): the owner is the listener's, go and ask. */
#define ASK_LISTENER 1

static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Fills *ep, keeping an IPv4-mapped IPv6 address as IPv4 (rule 1: one form). */
static void endpoint_set(struct peer_endpoint *ep, int family, const void *addr, uint16_t port)
{
	memset(ep, 0, sizeof(*ep));
	if (family == AF_INET6 && memcmp(addr, v4_mapped_prefix, 12) == 0) {
		ep->family = AF_INET;
		memcpy(ep->addr, (const uint8_t *)addr + 12, 4);
	} else {
		ep->family = family;
		memcpy(ep->addr, addr, addr_len(family));
	}
	ep->port = port;
}

static bool endpoint_equal(const struct peer_endpoint *a, const struct peer_endpoint *b)
{
	return a->family == b->family && a->port == b->port &&
	       memcmp(a->addr, b->addr, addr_len(a->family)) == 0;
}

static bool addr_is_any(const struct peer_endpoint *ep)
{
	static const uint8_t zero[16];

	return memcmp(ep->addr, zero, addr_len(ep->family)) == 0;
}

/* Whether a socket listening on l could take a connection to server: the
 * same port, and server's address or a wildcard (:: takes IPv4 too unless
 * IPV6_V6ONLY, which neither netlink's reply nor /proc shows). */
static bool listener_covers(const struct peer_endpoint *l, const struct peer_endpoint *server)
{
	if (l->port != server->port)
		return false;
	if (l->family == server->family && memcmp(l->addr, server->addr, addr_len(l->family)) == 0)
		return true;
	if (!addr_is_any(l))
		return false;
	return l->family == AF_INET6 || server->family == AF_INET;
}

/* Rule 2: 0 with *uid set, -ENOTCONN, or ASK_LISTENER. */
static int judge_connection(const struct peer_sock *s, uid_t *uid)
{
	if (s->state == TCP_SYN_RECV)
		return ASK_LISTENER;
	if (s->inode != 0) {
		*uid = s->uid;
		return 0;
	}
	if (s->state != TCP_ESTABLISHED)
		return -ENOTCONN;
	/* In the accept queue.  Kernels that keep sk_uid report the
	 * listener's uid here; older ones 0 for want of an inode. */
	if (s->uid != 0) {
		*uid = s->uid;
		return 0;
	}
	return ASK_LISTENER;
}

static int check_pair(const struct peer_endpoint *server, const struct peer_endpoint *client)
{
	if ((server->family != AF_INET && server->family != AF_INET6) ||
	    server->family != client->family)
		return -EINVAL;
	return 0;
}

int peer_endpoint_parse(const char *ip, long port, struct peer_endpoint *ep)
{
	uint8_t addr[16];

	if (!ip || port < 1 || port > 65535)
		return -EINVAL;
	if (inet_pton(AF_INET, ip, addr) == 1)
		endpoint_set(ep, AF_INET, addr, (uint16_t)port);
	else if (inet_pton(AF_INET6, ip, addr) == 1)
		endpoint_set(ep, AF_INET6, addr, (uint16_t)port);
	else
		return -EINVAL;
	return 0;
}

int peer_endpoint_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct peer_endpoint *ep)
{
	if (len < sizeof(sa_family_t))
		return -EINVAL;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in in;

		if (len < sizeof(in))
			return -EINVAL;
		memcpy(&in, sa, sizeof(in));
		endpoint_set(ep, AF_INET, &in.sin_addr, ntohs(in.sin_port));
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 in6;

		if (len < sizeof(in6))
			return -EINVAL;
		memcpy(&in6, sa, sizeof(in6));
		endpoint_set(ep, AF_INET6, &in6.sin6_addr, ntohs(in6.sin6_port));
		return 0;
	}
	return -EAFNOSUPPORT;
}

/* ---- NETLINK_SOCK_DIAG ---- */

/* Asks the kernel for the TCP socket whose local end is local and remote
 * end remote (an exact lookup, which falls back to a listener on local when
 * no connection matches).  Fills *s, *got_local and *got_remote from the
 * reply.  Returns 0, -ENOENT, or -errno. */
static int diag_ask(int fd, uint32_t seq, const struct peer_endpoint *local,
		    const struct peer_endpoint *remote, struct peer_sock *s,
		    struct peer_endpoint *got_local, struct peer_endpoint *got_remote)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	union {
		struct nlmsghdr nlh;
		char buf[8192];
	} reply;

	memset(&msg, 0, sizeof(msg));
	msg.nlh.nlmsg_len = sizeof(msg);
	msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	msg.nlh.nlmsg_flags = NLM_F_REQUEST;
	msg.nlh.nlmsg_seq = seq;
	msg.req.sdiag_family = (uint8_t)local->family;
	msg.req.sdiag_protocol = IPPROTO_TCP;
	msg.req.idiag_states = ~0U;
	msg.req.id.idiag_sport = htons(local->port);
	msg.req.id.idiag_dport = htons(remote->port);
	memcpy(msg.req.id.idiag_src, local->addr, addr_len(local->family));
	memcpy(msg.req.id.idiag_dst, remote->addr, addr_len(remote->family));
	msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

	for (;;) {
		ssize_t n =
		    sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel));

		if (n >= 0)
			break;
		if (errno != EINTR)
			return -errno;
	}

	/* The kernel answers inside sendto(); the loop only passes over
	 * anything that is not the answer (rule 4). */
	for (int reads = 0; reads < 8; reads++) {
		struct sockaddr_nl from;
		struct iovec iov = {.iov_base = reply.buf, .iov_len = sizeof(reply.buf)};
		struct msghdr mh = {
		    .msg_name = &from,
		    .msg_namelen = sizeof(from),
		    .msg_iov = &iov,
		    .msg_iovlen = 1,
		};
		ssize_t n = recvmsg(fd, &mh, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (mh.msg_flags & MSG_TRUNC)
			return -EMSGSIZE;
		if (mh.msg_namelen < sizeof(from) || from.nl_pid != 0)
			continue;
		size_t left = (size_t)n;
		for (struct nlmsghdr *h = &reply.nlh; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EBADMSG;
				if (e->error == 0)
					continue; /* an acknowledgement */
				return e->error < 0 ? e->error : -EBADMSG;
			}
			if (h->nlmsg_type == NLMSG_DONE)
				return -ENOENT;
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
				continue;

			const struct inet_diag_msg *m = NLMSG_DATA(h);

			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
				return -EBADMSG;
			if (m->idiag_family != AF_INET && m->idiag_family != AF_INET6)
				return -EBADMSG;
			endpoint_set(got_local, m->idiag_family, m->id.idiag_src,
				     ntohs(m->id.idiag_sport));
			endpoint_set(got_remote, m->idiag_family, m->id.idiag_dst,
				     ntohs(m->id.idiag_dport));
			s->state = m->idiag_state;
			s->uid = m->idiag_uid;
			s->inode = m->idiag_inode;
			return 0;
		}
	}
	return -EBADMSG;
}

int peer_tcp_owner_netlink(const struct peer_endpoint *server, const struct peer_endpoint *client,
			   uid_t *uid)
{
	static const struct timeval timeout = {.tv_sec = 1};
	struct peer_endpoint got_local, got_remote, nowhere;
	struct peer_sock s;
	int r;

	r = check_pair(server, client);
	if (r < 0)
		return r;

	_cleanup_(closep) int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0)
		return -errno;

	r = diag_ask(fd, 1, server, client, &s, &got_local, &got_remote);
	if (r < 0)
		return r;
	/* Rule 1: a listener's row, or anything else, is not our connection. */
	if (!endpoint_equal(&got_local, server) || !endpoint_equal(&got_remote, client))
		return -ENOENT;
	r = judge_connection(&s, uid);
	if (r != ASK_LISTENER)
		return r;

	/* Where a SYN to server would go now: the kernel's listener lookup.
	 * A queued connection dies with its listener, and two owners cannot
	 * listen on one address and port, so this is the queue's owner. */
	endpoint_set(&nowhere, server->family, (const uint8_t[16]){0}, 0);
	r = diag_ask(fd, 2, server, &nowhere, &s, &got_local, &got_remote);
	if (r < 0)
		return r;
	if (s.state != TCP_LISTEN || s.inode == 0 || !listener_covers(&got_local, server))
		return -ENOENT;
	*uid = s.uid;
	return 0;
}

/* ---- /proc/net/tcp and /proc/net/tcp6 ---- */

struct proc_row {
	struct peer_endpoint local, remote;
	struct peer_sock sock;
};

/* An "ADDR:PORT" column: 8 (tcp) or 32 (tcp6) hex digits, each group of
 * 8 a 32-bit word of the address as the kernel holds it, printed in host
 * order; then 4 hex digits of the port, in host order. */
static int parse_hex_endpoint(const char *s, bool v6, struct peer_endpoint *ep)
{
	size_t words = v6 ? 4 : 1;
	uint8_t addr[16];
	char hex[9];
	unsigned long port;
	char *end;

	if (strlen(s) != words * 8 + 5 || s[words * 8] != ':')
		return -EINVAL;
	for (size_t i = 0; i < words * 8 + 5; i++)
		if (i != words * 8 && !isxdigit((unsigned char)s[i]))
			return -EINVAL;
	for (size_t w = 0; w < words; w++) {
		uint32_t word;

		memcpy(hex, s + w * 8, 8);
		hex[8] = '\0';
		word = (uint32_t)strtoul(hex, NULL, 16);
		memcpy(addr + w * 4, &word, 4);
	}
	port = strtoul(s + words * 8 + 1, &end, 16);
	if (*end != '\0')
		return -EINVAL;
	endpoint_set(ep, v6 ? AF_INET6 : AF_INET, addr, (uint16_t)port);
	return 0;
}

static int parse_decimal(const char *s, unsigned long max, unsigned long *v)
{
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	*v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || *v > max)
		return -EINVAL;
	return 0;
}

/* One row:
 *   sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout inode
 * ... Returns 0, or -EINVAL for a line that is not such a row. */
static int parse_row(const char *line, bool v6, struct proc_row *row)
{
	char local[48], remote[48], state[4], uid[12], inode[24];
	unsigned long st, u, ino;

	if (sscanf(line, " %*s %47s %47s %3s %*s %*s %*s %11s %*s %23s", local, remote, state, uid,
		   inode) != 5)
		return -EINVAL;
	if (parse_hex_endpoint(local, v6, &row->local) < 0 ||
	    parse_hex_endpoint(remote, v6, &row->remote) < 0)
		return -EINVAL;
	if (strlen(state) != 2 || !isxdigit((unsigned char)state[0]) ||
	    !isxdigit((unsigned char)state[1]))
		return -EINVAL;
	st = strtoul(state, NULL, 16);
	if (parse_decimal(uid, UINT32_MAX, &u) < 0 || parse_decimal(inode, ULONG_MAX, &ino) < 0)
		return -EINVAL;
	row->sock.state = (int)st;
	row->sock.uid = (uid_t)u;
	row->sock.inode = ino;
	return 0;
}

struct proc_scan {
	const struct peer_endpoint *server, *client;
	bool found;
	struct peer_sock conn;
	unsigned listeners;
	uid_t listener_uid;
	bool listeners_differ;
};

static int scan_table(FILE *f, bool v6, struct proc_scan *scan)
{
	_cleanup_(freep) char *line = NULL;
	size_t size = 0;
	bool header = true;

	for (;;) {
		struct proc_row row;
		ssize_t n;

		errno = 0;
		n = getline(&line, &size, f);
		if (n < 0)
			return errno != 0 ? -errno : 0;
		if (header) {
			header = false;
			continue;
		}
		if (parse_row(line, v6, &row) < 0)
			return -EBADMSG; /* rule 3: it might have been ours */
		if (endpoint_equal(&row.local, scan->server) &&
		    endpoint_equal(&row.remote, scan->client)) {
			if (!scan->found)
				scan->conn = row.sock;
			scan->found = true;
		} else if (row.sock.state == TCP_LISTEN &&
			   listener_covers(&row.local, scan->server)) {
			if (scan->listeners > 0 && row.sock.uid != scan->listener_uid)
				scan->listeners_differ = true;
			scan->listener_uid = row.sock.uid;
			scan->listeners++;
		}
	}
}

int peer_tcp_owner_proc(FILE *tcp, FILE *tcp6, const struct peer_endpoint *server,
			const struct peer_endpoint *client, uid_t *uid)
{
	struct proc_scan scan = {.server = server, .client = client};
	int r;

	r = check_pair(server, client);
	if (r < 0)
		return r;
	/* An IPv4 connection may be held by an AF_INET6 socket (tcp6, in
	 * IPv4-mapped form); an IPv6 one only by an AF_INET6 socket. */
	if (tcp && server->family == AF_INET) {
		r = scan_table(tcp, false, &scan);
		if (r < 0)
			return r;
	}
	if (tcp6) {
		r = scan_table(tcp6, true, &scan);
		if (r < 0)
			return r;
	}
	if (!scan.found)
		return -ENOENT;
	r = judge_connection(&scan.conn, uid);
	if (r != ASK_LISTENER)
		return r;
	if (scan.listeners == 0)
		return -ENOENT;
	if (scan.listeners_differ)
		return -EAGAIN;
	*uid = scan.listener_uid;
	return 0;
}

static void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

/* peer_tcp_owner_proc() on this host's tables.  Returns as it does, or
 * -errno when /proc/net/tcp cannot be read. */
static int proc_owner(const struct peer_endpoint *server, const struct peer_endpoint *client,
		      uid_t *uid)
{
	_cleanup_(fclosep) FILE *tcp = fopen("/proc/net/tcp", "re");
	if (!tcp)
		return -errno;
	/* No tcp6 table: IPv6 is off, and no socket is AF_INET6. */
	_cleanup_(fclosep) FILE *tcp6 = fopen("/proc/net/tcp6", "re");
	if (!tcp6 && errno != ENOENT)
		return -errno;
	return peer_tcp_owner_proc(tcp, tcp6, server, client, uid);
}

int peer_tcp_owner(const struct peer_endpoint *server, const struct peer_endpoint *client,
		   uid_t *uid)
{
	int r, p;

	r = check_pair(server, client);
	if (r < 0)
		return r;
	r = peer_tcp_owner_netlink(server, client, uid);
	if (r == 0 || r == -ENOTCONN)
		return r;
	/* Netlink closed to us (a seccomp filter, RestrictAddressFamilies=),
	 * or without inet_diag (also -ENOENT): /proc has the same table. */
	p = proc_owner(server, client, uid);
	if (p == 0 || p == -ENOENT || p == -ENOTCONN || p == -EAGAIN)
		return p;
	return r;
}

/* ---- AF_UNIX, and any socket ---- */

static int sock_int(int fd, int opt, int *v)
{
	socklen_t len = sizeof(*v);

	if (getsockopt(fd, SOL_SOCKET, opt, v, &len) < 0)
		return -errno;
	return 0;
}

int peer_unix_owner(int fd, uid_t *uid)
{
	struct sockaddr_un peer;
	struct ucred cred;
	socklen_t len;
	int domain, type, r;

	r = sock_int(fd, SO_DOMAIN, &domain);
	if (r < 0)
		return r;
	if (domain != AF_UNIX)
		return -EAFNOSUPPORT;
	/* A datagram socket's connect() records no credentials. */
	r = sock_int(fd, SO_TYPE, &type);
	if (r < 0)
		return r;
	if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
		return -EPROTOTYPE;
	/* Unconnected, SO_PEERCRED answers the overflow uid (nobody). */
	len = sizeof(peer);
	if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0)
		return -errno;
	len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (len != sizeof(cred))
		return -EIO;
	*uid = cred.uid;
	return 0;
}

int peer_socket_owner(int fd, uid_t *uid)
{
	struct sockaddr_storage ss;
	struct peer_endpoint server, client;
	socklen_t len;
	int domain, protocol, r;

	r = sock_int(fd, SO_DOMAIN, &domain);
	if (r < 0)
		return r;
	if (domain == AF_UNIX)
		return peer_unix_owner(fd, uid);
	if (domain != AF_INET && domain != AF_INET6)
		return -EAFNOSUPPORT;
	r = sock_int(fd, SO_PROTOCOL, &protocol);
	if (r < 0)
		return r;
	if (protocol != IPPROTO_TCP)
		return -EPROTONOSUPPORT;

	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	r = peer_endpoint_from_sockaddr((struct sockaddr *)&ss, len, &client);
	if (r < 0)
		return r;
	len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	r = peer_endpoint_from_sockaddr((struct sockaddr *)&ss, len, &server);
	if (r < 0)
		return r;
	return peer_tcp_owner(&server, &client, uid);
}

/* ---- --forge-user, and what counts as loopback ---- */

static bool valid_user_name(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > 256)
		return false;
	if (!isalpha((unsigned char)s[0]) && s[0] != '_')
		return false;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '$' && i == len - 1)
			break;
		if (!isalnum(c) && c != '_' && c != '.' && c != '-')
			return false;
	}
	return true;
}

int peer_user_parse(const char *spec, uid_t *uid)
{
	size_t size = 1024;

	if (!spec || !*spec)
		return -EINVAL;
	if (isdigit((unsigned char)spec[0])) {
		uint64_t v = 0;

		for (const char *p = spec; *p; p++) {
			if (!isdigit((unsigned char)*p))
				return -EINVAL;
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > UINT32_MAX - 1) /* (uid_t)-1 means "no uid" */
				return -EINVAL;
		}
		*uid = (uid_t)v;
		return 0;
	}
	if (!valid_user_name(spec))
		return -EINVAL;

	for (;;) {
		_cleanup_(freep) char *buf = malloc(size);
		struct passwd pw, *found = NULL;
		int r;

		if (!buf)
			return -ENOMEM;
		r = getpwnam_r(spec, &pw, buf, size, &found);
		if (r == ERANGE && size < 1024 * 1024) {
			size *= 2;
			continue;
		}
		if (r == 0 && found) {
			*uid = found->pw_uid;
			return 0;
		}
		if (r == 0 || r == ENOENT || r == ESRCH)
			return -ENOENT;
		return -r;
	}
}

static bool v6_is_loopback(const struct in6_addr *a)
{
	return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

bool peer_ip_is_loopback(const char *ip)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (!ip)
		return false;
	if (inet_pton(AF_INET, ip, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, ip, &a6) == 1)
		return v6_is_loopback(&a6);
	return false;
}

bool peer_host_is_loopback(const char *host)
{
	char inner[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	size_t len;

	if (!host)
		return false;
	if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
		return true;
	len = strlen(host);
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		if (len - 2 >= sizeof(inner))
			return false;
		memcpy(inner, host + 1, len - 2);
		inner[len - 2] = '\0';
		return inet_pton(AF_INET6, inner, &a6) == 1 && v6_is_loopback(&a6);
	}
	return peer_ip_is_loopback(host);
}
