/* Who owns the server end: real listeners on 127.0.0.1 and ::1 in this
 * process (and, as root, in a child that became nobody), the /proc tables
 * fed as fixed text, netlink taken away by a seccomp filter, AF_UNIX, and
 * the parsers behind --forge-user. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "peer.h"

#define NOBODY 65534

/* ---- real sockets ---- */

/* A listening TCP socket on ip, port 0; v6only -1 leaves IPV6_V6ONLY as it
 * is; defer sets TCP_DEFER_ACCEPT, so the server end of a connection stays
 * a request sock (SYN_RECV) until data comes.  Returns the fd, or -1 with
 * errno set. */
static int tcp_listener(int family, const char *ip, int v6only, bool defer)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1, seconds = 30;

	if (fd < 0)
		return -1;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &in->sin_addr);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &in6->sin6_addr);
		len = sizeof(*in6);
		if (v6only >= 0)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (defer)
		setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof(seconds));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static uint16_t local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int tcp_connect(int family, const char *ip, uint16_t port)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
		len = sizeof(*in6);
	}
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
	return fd;
}

/* Our connection's ends as libcurl reports them: numeric strings. */
struct ends {
	char server_ip[INET6_ADDRSTRLEN], local_ip[INET6_ADDRSTRLEN];
	long server_port, local_port;
	struct peer_endpoint server, local;
};

/* peer_tcp_owner() on numeric addresses and ports as libcurl names a
 * connection's ends; -EINVAL for what peer_endpoint_parse() refuses. */
static int owner_of(const char *server_ip, long server_port, const char *local_ip, long local_port,
		    uid_t *uid)
{
	struct peer_endpoint server, client;

	if (peer_endpoint_parse(server_ip, server_port, &server) < 0 ||
	    peer_endpoint_parse(local_ip, local_port, &client) < 0)
		return -EINVAL;
	return peer_tcp_owner(&server, &client, uid);
}

static void name_of(const struct sockaddr_storage *ss, char *ip, long *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &in->sin_addr, ip, INET6_ADDRSTRLEN);
		*port = ntohs(in->sin_port);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, INET6_ADDRSTRLEN);
		*port = ntohs(in6->sin6_port);
	}
}

static void ends_of(int client, struct ends *e)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	assert_int_equal(getpeername(client, (struct sockaddr *)&ss, &len), 0);
	name_of(&ss, e->server_ip, &e->server_port);
	len = sizeof(ss);
	assert_int_equal(getsockname(client, (struct sockaddr *)&ss, &len), 0);
	name_of(&ss, e->local_ip, &e->local_port);
	assert_int_equal(peer_endpoint_parse(e->server_ip, e->server_port, &e->server), 0);
	assert_int_equal(peer_endpoint_parse(e->local_ip, e->local_port, &e->local), 0);
}

static int proc_tables_owner(const struct ends *e, uid_t *uid)
{
	FILE *tcp = fopen("/proc/net/tcp", "re");
	FILE *tcp6 = fopen("/proc/net/tcp6", "re");
	int r;

	assert_non_null(tcp);
	r = peer_tcp_owner_proc(tcp, tcp6, &e->server, &e->local, uid);
	fclose(tcp);
	if (tcp6)
		fclose(tcp6);
	return r;
}

/* Every way in agrees: want >= 0 is the owner, want < 0 the error. */
static void expect_owner(int client, long want)
{
	struct ends e;
	uid_t uid;

	ends_of(client, &e);
	uid = 4242;
	assert_int_equal(peer_tcp_owner_netlink(&e.server, &e.local, &uid), want < 0 ? want : 0);
	if (want >= 0)
		assert_int_equal(uid, want);
	uid = 4242;
	assert_int_equal(proc_tables_owner(&e, &uid), want < 0 ? want : 0);
	if (want >= 0)
		assert_int_equal(uid, want);
	uid = 4242;
	assert_int_equal(owner_of(e.server_ip, e.server_port, e.local_ip, e.local_port, &uid),
			 want < 0 ? want : 0);
	if (want >= 0)
		assert_int_equal(uid, want);
	uid = 4242;
	assert_int_equal(peer_socket_owner(client, &uid), want < 0 ? want : 0);
	if (want >= 0)
		assert_int_equal(uid, want);
}

/* The state of the server end in /proc/net/tcp{,6}, found by the two ports
 * (host order there, so no byte-order guesswork); -1 when absent. */
static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);

	return n >= t && strcmp(s + n - t, tail) == 0;
}

/* The state of the server end in /proc/net/tcp{,6}, found by the two ports
 * (host order there, so no byte-order guesswork); -1 when absent. */
static int server_state(int client)
{
	static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	char local_tail[8], remote_tail[8], line[512];
	struct ends e;
	int state = -1;

	ends_of(client, &e);
	snprintf(local_tail, sizeof(local_tail), ":%04lX", e.server_port);
	snprintf(remote_tail, sizeof(remote_tail), ":%04lX", e.local_port);
	for (size_t t = 0; t < 2 && state < 0; t++) {
		FILE *f = fopen(tables[t], "re");

		if (!f)
			continue;
		while (state < 0 && fgets(line, sizeof(line), f)) {
			char local[48], remote[48];
			unsigned st;

			if (sscanf(line, " %*s %47s %47s %x", local, remote, &st) == 3 &&
			    ends_with(local, local_tail) && ends_with(remote, remote_tail))
				state = (int)st;
		}
		fclose(f);
	}
	return state;
}

static void owner_before_and_after_accept(int family, const char *ip, const char *name)
{
	int l = tcp_listener(family, ip, -1, false);
	int c, s;

	if (l < 0) {
		print_message("skipped: no %s loopback here (%s)\n", name, strerror(errno));
		skip();
	}
	c = tcp_connect(family, ip, local_port(l));
	assert_int_equal(server_state(c), TCP_ESTABLISHED);
	expect_owner(c, (long)geteuid()); /* in the accept queue */
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(s >= 0);
	expect_owner(c, (long)geteuid());
	close(s);
	close(c);
	close(l);
}

static void owner_over_ipv4(void **state)
{
	(void)state;
	owner_before_and_after_accept(AF_INET, "127.0.0.1", "IPv4");
	owner_before_and_after_accept(AF_INET, "127.1.2.3", "IPv4");
}

static void owner_over_ipv6(void **state)
{
	(void)state;
	owner_before_and_after_accept(AF_INET6, "::1", "IPv6");
}

/* A dual-stack listener holds an IPv4 connection as an AF_INET6 socket with
 * IPv4-mapped addresses (tcp6 in /proc); an AF_INET6 client reaching an
 * AF_INET listener sees mapped addresses on its own side. */
static void owner_over_ipv4_mapped(void **state)
{
	(void)state;
	int l6 = tcp_listener(AF_INET6, "::", 0, false);
	int l4, c, s;
	struct ends e;
	uid_t uid;

	if (l6 < 0) {
		print_message("skipped: no dual-stack listener here (%s)\n", strerror(errno));
		skip();
	}
	c = tcp_connect(AF_INET, "127.0.0.1", local_port(l6));
	expect_owner(c, (long)geteuid());
	ends_of(c, &e);
	assert_int_equal(
	    owner_of("::ffff:127.0.0.1", e.server_port, "::ffff:127.0.0.1", e.local_port, &uid), 0);
	assert_int_equal(uid, geteuid());
	s = accept4(l6, NULL, NULL, SOCK_CLOEXEC);
	assert_true(s >= 0);
	expect_owner(c, (long)geteuid());
	close(s);
	close(c);
	close(l6);

	l4 = tcp_listener(AF_INET, "127.0.0.1", -1, false);
	assert_true(l4 >= 0);
	c = tcp_connect(AF_INET6, "::ffff:127.0.0.1", local_port(l4));
	ends_of(c, &e);
	assert_string_equal(e.server_ip, "::ffff:127.0.0.1");
	assert_int_equal(e.server.family, AF_INET);
	expect_owner(c, (long)geteuid());
	close(c);
	close(l4);
}

/* With TCP_DEFER_ACCEPT the server end stays a request sock, which netlink
 * reports with uid 0: the answer must be the listener's owner. */
static void owner_of_a_request_sock(void **state)
{
	(void)state;
	int l = tcp_listener(AF_INET, "127.0.0.1", -1, true);
	int c;

	assert_true(l >= 0);
	c = tcp_connect(AF_INET, "127.0.0.1", local_port(l));
	assert_int_equal(server_state(c), TCP_SYN_RECV);
	expect_owner(c, (long)geteuid());
	close(c);
	close(l);
}

/* The forge restarts: its listener closes while our SYN sits in its queue
 * as a request sock (for about a second more).  No listener, no owner. */
static void request_sock_of_a_closed_listener(void **state)
{
	(void)state;
	int l = tcp_listener(AF_INET, "127.0.0.1", -1, true);
	int c;

	assert_true(l >= 0);
	c = tcp_connect(AF_INET, "127.0.0.1", local_port(l));
	close(l);
	if (server_state(c) != TCP_SYN_RECV) {
		print_message("skipped: the request sock went with its listener\n");
		close(c);
		skip();
	}
	expect_owner(c, -ENOENT);
	close(c);
}

static void no_such_connection(void **state)
{
	(void)state;
	int l = tcp_listener(AF_INET, "127.0.0.1", -1, false);
	struct peer_endpoint server, client;
	uid_t uid = 4242;
	long port;

	assert_true(l >= 0);
	port = local_port(l);
	/* A listener on the port, but no connection from port 1: the exact
	 * lookup's fallback to the listener must not count. */
	assert_int_equal(peer_endpoint_parse("127.0.0.1", port, &server), 0);
	assert_int_equal(peer_endpoint_parse("127.0.0.1", 1, &client), 0);
	assert_int_equal(peer_tcp_owner_netlink(&server, &client, &uid), -ENOENT);
	assert_int_equal(peer_tcp_owner(&server, &client, &uid), -ENOENT);
	assert_int_equal(owner_of("127.0.0.1", port, "127.0.0.1", 1, &uid), -ENOENT);
	assert_int_equal(owner_of("::ffff:127.0.0.1", port, "127.0.0.1", 1, &uid), -ENOENT);
	close(l);
	/* Nothing on the port at all, and over IPv6. */
	assert_int_equal(peer_tcp_owner(&server, &client, &uid), -ENOENT);
	assert_int_equal(owner_of("::1", port, "::1", 1, &uid), -ENOENT);
	/* A server end elsewhere: 192.0.2.1 is TEST-NET-1. */
	assert_int_equal(owner_of("192.0.2.1", 80, "127.0.0.1", 4000, &uid), -ENOENT);
	assert_int_equal(uid, 4242);

	/* Bad arguments. */
	assert_int_equal(owner_of("127.0.0.1", port, "::1", 1, &uid), -EINVAL);
	assert_int_equal(owner_of("[::1]", port, "::1", 1, &uid), -EINVAL);
	assert_int_equal(owner_of("127.0.0.1", 0, "127.0.0.1", 1, &uid), -EINVAL);
	assert_int_equal(owner_of("127.0.0.1", 65536, "127.0.0.1", 1, &uid), -EINVAL);
	assert_int_equal(owner_of("localhost", 80, "127.0.0.1", 1, &uid), -EINVAL);
	assert_int_equal(uid, 4242);
}

/* The server closed its end: orphaned (FIN_WAIT), then TIME_WAIT.  The
 * kernel still has a socket, but no owner to tell. */
static void closing_server_end(void **state)
{
	(void)state;
	int l = tcp_listener(AF_INET, "127.0.0.1", -1, false);
	int c, s;
	char byte;
	struct ends e;
	uid_t uid;

	assert_true(l >= 0);
	c = tcp_connect(AF_INET, "127.0.0.1", local_port(l));
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(s >= 0);
	ends_of(c, &e);
	close(s);
	assert_int_equal(read(c, &byte, 1), 0); /* the server's FIN */
	assert_int_equal(peer_tcp_owner(&e.server, &e.local, &uid), -ENOTCONN);
	assert_int_equal(proc_tables_owner(&e, &uid), -ENOTCONN);
	close(c);
	assert_int_equal(peer_tcp_owner(&e.server, &e.local, &uid), -ENOTCONN);
	assert_int_equal(proc_tables_owner(&e, &uid), -ENOTCONN);
	close(l);
}

/* The tables are per network namespace: from another one, our connection
 * (and its listener) do not exist. */
static void other_network_namespace_sees_nothing(void **state)
{
	(void)state;
	int l = tcp_listener(AF_INET, "127.0.0.1", -1, false);
	int c, status;
	struct ends e;
	pid_t pid;

	assert_true(l >= 0);
	c = tcp_connect(AF_INET, "127.0.0.1", local_port(l));
	ends_of(c, &e);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uid_t uid = 4242;

		if (unshare(CLONE_NEWNET) < 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
			_exit(10);
		if (peer_tcp_owner_netlink(&e.server, &e.local, &uid) != -ENOENT)
			_exit(11);
		if (peer_tcp_owner(&e.server, &e.local, &uid) != -ENOENT || uid != 4242)
			_exit(12);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 10) {
		print_message("skipped: cannot make a network namespace here\n");
		skip();
	}
	/* 11 netlink saw it, 12 /proc saw it */
	assert_int_equal(WEXITSTATUS(status), 0);
	expect_owner(c, (long)geteuid()); /* and here it is */
	close(c);
	close(l);
}

/* ---- a listener of another user ---- */

static void write_int(int fd, int v)
{
	if (write(fd, &v, sizeof(v)) != sizeof(v))
		_exit(3);
}

static int read_int(int fd)
{
	int v;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return -1;
	return v;
}

/* The child: becomes nobody, then listens (plain, deferred, AF_UNIX), and
 * accepts on the plain one when told. */
static void nobody_listens(int to_parent, int from_parent, const char *unix_name)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int plain, deferred, un, s;

	if (setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0) {
		write_int(to_parent, errno);
		_exit(0);
	}
	plain = tcp_listener(AF_INET, "127.0.0.1", -1, false);
	deferred = tcp_listener(AF_INET, "127.0.0.1", -1, true);
	un = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(sun.sun_path + 1, unix_name, strlen(unix_name));
	if (plain < 0 || deferred < 0 || un < 0 ||
	    bind(un, (struct sockaddr *)&sun,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(unix_name))) < 0 ||
	    listen(un, 4) < 0)
		_exit(2);
	write_int(to_parent, 0);
	write_int(to_parent, local_port(plain));
	write_int(to_parent, local_port(deferred));
	if (read_int(from_parent) != 1)
		_exit(4);
	s = accept4(plain, NULL, NULL, SOCK_CLOEXEC);
	write_int(to_parent, s >= 0 ? 0 : errno);
	read_int(from_parent); /* until the parent is done */
	_exit(0);
}

static void owner_of_another_user(void **state)
{
	(void)state;
	int up[2], down[2], status, err, c1, c2, u;
	char unix_name[64];
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	uid_t uid;
	pid_t pid;

	if (geteuid() != 0) {
		print_message("skipped: needs root (a listener owned by uid %d)\n", NOBODY);
		skip();
	}
	snprintf(unix_name, sizeof(unix_name), "hive-peer-test-%d", (int)getpid());
	assert_int_equal(pipe2(up, O_CLOEXEC), 0);
	assert_int_equal(pipe2(down, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		nobody_listens(up[1], down[0], unix_name);
	}
	close(up[1]);
	close(down[0]);
	err = read_int(up[0]);
	if (err != 0) {
		close(down[1]);
		waitpid(pid, &status, 0);
		/* Root in a user namespace that maps no other uid. */
		print_message("skipped: needs root (setresuid(%d): %s)\n", NOBODY,
			      err > 0 ? strerror(err) : "no answer");
		skip();
	}

	c1 = tcp_connect(AF_INET, "127.0.0.1", (uint16_t)read_int(up[0]));
	c2 = tcp_connect(AF_INET, "127.0.0.1", (uint16_t)read_int(up[0]));
	expect_owner(c1, NOBODY); /* queued, not accepted yet */
	assert_int_equal(server_state(c2), TCP_SYN_RECV);
	expect_owner(c2, NOBODY); /* a request sock: netlink says uid 0 */

	u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(sun.sun_path + 1, unix_name, strlen(unix_name));
	assert_int_equal(
	    connect(u, (struct sockaddr *)&sun,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(unix_name))),
	    0);
	assert_int_equal(peer_unix_owner(u, &uid), 0);
	assert_int_equal(uid, NOBODY);

	write_int(down[1], 1);
	assert_int_equal(read_int(up[0]), 0);
	expect_owner(c1, NOBODY); /* accepted by nobody */

	close(down[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(up[0]);
	close(c1);
	close(c2);
	close(u);
}

/* ---- netlink taken away: /proc answers ---- */

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static void netlink_denied_falls_back_to_proc(void **state)
{
	(void)state;
#ifdef TEST_AUDIT_ARCH
	int l = tcp_listener(AF_INET, "127.0.0.1", -1, false);
	int c, status;
	struct ends e;
	pid_t pid;

	assert_true(l >= 0);
	c = tcp_connect(AF_INET, "127.0.0.1", local_port(l));
	ends_of(c, &e);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* socket(AF_NETLINK, ...) fails with EPERM, as under a
		 * unit's SystemCallFilter= or RestrictAddressFamilies=. */
		struct sock_filter filter[] = {
		    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3),
		    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 0, 1),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]),
					  .filter = filter};
		uid_t uid = 4242;

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
			_exit(10);
		if (peer_tcp_owner_netlink(&e.server, &e.local, &uid) != -EPERM)
			_exit(11);
		if (peer_tcp_owner(&e.server, &e.local, &uid) != 0 || uid != geteuid())
			_exit(12);
		e.local.port = 1;
		if (peer_tcp_owner(&e.server, &e.local, &uid) != -ENOENT)
			_exit(13);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	/* 10 no seccomp, 11 netlink not denied, 12 no fallback, 13 bad ENOENT */
	assert_int_equal(WEXITSTATUS(status), 0);
	close(c);
	close(l);
#else
	print_message("skipped: no seccomp filter written for this architecture\n");
	skip();
#endif
}

/* ---- the /proc tables as text ---- */

#define TCP_HEADER                                                                                 \
	"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "      \
	"timeout inode\n"
#define TCP6_HEADER                                                                                \
	"  sl  local_address                         remote_address                        st "    \
	"tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
#define TAIL " 1 0000000000000000 100 0 0 10 0\n"

/* Little-endian x86 captures: 127.0.0.1 is 0100007F, ::1 is
 * 00000000000000000000000001000000, ::ffff:127.0.0.1 is
 * 0000000000000000FFFF00000100007F; ports 3000 0BB8, 8080 1F90, 40000 9C40,
 * 50000 C350. */
static char tcp_text[] = TCP_HEADER
    /* listener 127.0.0.1:3000 of uid 990 */
    "   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000   990        0 "
    "1000" TAIL
    /* its connection from 127.0.0.1:40000, accepted */
    "   1: 0100007F:0BB8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   990        0 "
    "1001" TAIL
    /* our end of it */
    "   2: 0100007F:9C40 0100007F:0BB8 01 00000000:00000000 00:00000000 00000000  1000        0 "
    "1002" TAIL
    /* a request sock: /proc shows the listener's uid */
    "   3: 0100007F:0BB8 0100007F:9C41 03 00000000:00000000 02:00000043 00000000   990        0 "
    "0" TAIL
    /* queued, not accepted, as kernels before sk_uid showed it */
    "   4: 0100007F:0BB8 0100007F:9C42 01 00000000:00000000 00:00000000 00000000     0        0 "
    "0" TAIL
    /* TIME_WAIT */
    "   5: 0100007F:0BB8 0100007F:9C43 06 00000000:00000000 03:00001740 00000000     0        0 "
    "0" TAIL
    /* closed by the forge, FIN_WAIT1 */
    "   6: 0100007F:0BB8 0100007F:9C44 04 00000000:00000000 01:00000014 00000000   990        0 "
    "0" TAIL
    /* queued, as kernels with sk_uid show it */
    "   7: 0100007F:0BB8 0100007F:9C45 01 00000000:00000000 00:00000000 00000000   990        0 "
    "0" TAIL;

static char tcp6_text[] = TCP6_HEADER
    /* listener [::]:8080 of uid 991 */
    "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000   991        0 2000" TAIL
    /* [::1]:8080 from [::1]:50000 */
    "   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 "
    "00000000:00000000 00:00000000 00000000   991        0 2001" TAIL
    /* 127.0.0.1:8080 from 127.0.0.1:50001, held by the dual-stack listener */
    "   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C351 01 "
    "00000000:00000000 00:00000000 00000000   991        0 2002" TAIL
    /* the same, queued, as kernels before sk_uid showed it */
    "   3: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C352 01 "
    "00000000:00000000 00:00000000 00000000     0        0 0" TAIL;

/* Another user's listener on 127.0.0.1:8080 beside [::]:8080 (which must
 * then be IPV6_V6ONLY): who took the queued connection is not clear. */
static char tcp_text_second_listener[] = TCP_HEADER
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1234        0 "
    "3000" TAIL;

static char tcp_text_garbled[] = TCP_HEADER
    "   0: 0100007F:0BB8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   990\n";

static int from_tables(char *tcp, char *tcp6, const char *server_ip, long server_port,
		       const char *local_ip, long local_port, uid_t *uid)
{
	struct peer_endpoint server, client;
	FILE *f4 = tcp ? fmemopen(tcp, strlen(tcp), "r") : NULL;
	FILE *f6 = tcp6 ? fmemopen(tcp6, strlen(tcp6), "r") : NULL;
	int r;

	assert_int_equal(peer_endpoint_parse(server_ip, server_port, &server), 0);
	assert_int_equal(peer_endpoint_parse(local_ip, local_port, &client), 0);
	r = peer_tcp_owner_proc(f4, f6, &server, &client, uid);
	if (f4)
		fclose(f4);
	if (f6)
		fclose(f6);
	return r;
}

static void proc_tables_as_text(void **state)
{
	(void)state;
	uid_t uid;

	if (htonl(1) == 1) {
		print_message("skipped: the fixed tables are little-endian captures\n");
		skip();
	}
#define OWNER(ip, port, lip, lport, want)                                                          \
	do {                                                                                       \
		uid = 4242;                                                                        \
		assert_int_equal(from_tables(tcp_text, tcp6_text, ip, port, lip, lport, &uid), 0); \
		assert_int_equal(uid, want);                                                       \
	} while (0)
#define FAILS(ip, port, lip, lport, err)                                                           \
	assert_int_equal(from_tables(tcp_text, tcp6_text, ip, port, lip, lport, &uid), err)

	OWNER("127.0.0.1", 3000, "127.0.0.1", 40000, 990);
	OWNER("127.0.0.1", 40000, "127.0.0.1", 3000, 1000); /* the other way round: ours */
	OWNER("127.0.0.1", 3000, "127.0.0.1", 40001, 990);  /* request sock */
	OWNER("127.0.0.1", 3000, "127.0.0.1", 40002, 990);  /* queued, uid 0: the listener's */
	OWNER("127.0.0.1", 3000, "127.0.0.1", 40005, 990);  /* queued, sk_uid */
	FAILS("127.0.0.1", 3000, "127.0.0.1", 40003, -ENOTCONN);
	FAILS("127.0.0.1", 3000, "127.0.0.1", 40004, -ENOTCONN);
	FAILS("127.0.0.1", 3000, "127.0.0.1", 49999, -ENOENT);
	FAILS("127.0.0.2", 3000, "127.0.0.1", 40000, -ENOENT);
	FAILS("::1", 3000, "::1", 40000, -ENOENT); /* IPv6 looks in tcp6 only */

	OWNER("::1", 8080, "::1", 50000, 991);
	OWNER("127.0.0.1", 8080, "127.0.0.1", 50001, 991); /* IPv4-mapped row in tcp6 */
	OWNER("::ffff:127.0.0.1", 8080, "::ffff:127.0.0.1", 50001, 991);
	OWNER("127.0.0.1", 8080, "127.0.0.1", 50002, 991); /* queued: [::]:8080 takes IPv4 */
	FAILS("::1", 8080, "::1", 50001, -ENOENT);

	uid = 4242;
	assert_int_equal(from_tables(tcp_text_second_listener, tcp6_text, "127.0.0.1", 8080,
				     "127.0.0.1", 50002, &uid),
			 -EAGAIN);
	assert_int_equal(from_tables(tcp_text_second_listener, tcp6_text, "127.0.0.1", 8080,
				     "127.0.0.1", 50001, &uid),
			 0); /* an accepted one has its own owner */
	assert_int_equal(uid, 991);
	assert_int_equal(from_tables(NULL, tcp6_text, "::1", 8080, "::1", 50000, &uid), 0);
	assert_int_equal(from_tables(tcp_text, NULL, "::1", 8080, "::1", 50000, &uid), -ENOENT);
	assert_int_equal(
	    from_tables(tcp_text_garbled, tcp6_text, "127.0.0.1", 3000, "127.0.0.1", 40000, &uid),
	    -EBADMSG);
#undef OWNER
#undef FAILS
}

/* ---- AF_UNIX ---- */

static void unix_owner(void **state)
{
	(void)state;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t len;
	int pair[2], l, c, s, tcp, p[2];
	uid_t uid;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	uid = 4242;
	assert_int_equal(peer_unix_owner(pair[0], &uid), 0);
	assert_int_equal(uid, geteuid());
	uid = 4242;
	assert_int_equal(peer_socket_owner(pair[1], &uid), 0);
	assert_int_equal(uid, geteuid());
	close(pair[0]);
	close(pair[1]);

	snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1, "hive-peer-unix-%d", (int)getpid());
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sun.sun_path + 1));
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sun, len), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(peer_unix_owner(l, &uid), -ENOTCONN); /* a listener has no peer */
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(peer_unix_owner(c, &uid), -ENOTCONN);
	assert_int_equal(connect(c, (struct sockaddr *)&sun, len), 0);
	uid = 4242;
	assert_int_equal(peer_unix_owner(c, &uid), 0); /* before accept() */
	assert_int_equal(uid, geteuid());
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(s >= 0);
	uid = 4242;
	assert_int_equal(peer_socket_owner(c, &uid), 0);
	assert_int_equal(uid, geteuid());
	close(s);
	close(c);
	close(l);

	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair), 0);
	assert_int_equal(peer_unix_owner(pair[0], &uid), -EPROTOTYPE);
	close(pair[0]);
	close(pair[1]);
	tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(peer_unix_owner(tcp, &uid), -EAFNOSUPPORT);
	assert_int_equal(peer_socket_owner(tcp, &uid), -ENOTCONN);
	close(tcp);
	tcp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(peer_socket_owner(tcp, &uid), -EPROTONOSUPPORT);
	close(tcp);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(peer_unix_owner(p[0], &uid), -ENOTSOCK);
	assert_int_equal(peer_socket_owner(p[0], &uid), -ENOTSOCK);
	close(p[0]);
	close(p[1]);
	assert_int_equal(peer_unix_owner(-1, &uid), -EBADF);
	assert_int_equal(uid, geteuid());
}

/* ---- the parsers ---- */

static void user_parse(void **state)
{
	(void)state;
	static const char *const invalid[] = {
	    "",
	    "-1",
	    " 1",
	    "1 ",
	    "+1",
	    "4294967295",
	    "4294967296",
	    "99999999999999999999",
	    "12a",
	    "0x10",
	    "root ",
	    " root",
	    "ro ot",
	    "-root",
	    ".root",
	    "root$x",
	    "r\xc3\xb6ot",
	    "a/b",
	};
	char too_long[258];
	uid_t uid;

	uid = 4242;
	assert_int_equal(peer_user_parse("0", &uid), 0);
	assert_int_equal(uid, 0);
	assert_int_equal(peer_user_parse("65534", &uid), 0);
	assert_int_equal(uid, 65534);
	assert_int_equal(peer_user_parse("4294967294", &uid), 0);
	assert_int_equal(uid, 4294967294U);
	assert_int_equal(peer_user_parse("007", &uid), 0);
	assert_int_equal(uid, 7);
	uid = 4242;
	assert_int_equal(peer_user_parse("root", &uid), 0);
	assert_int_equal(uid, 0);

	uid = 4242;
	assert_int_equal(peer_user_parse("nosuch-user-xyz", &uid), -ENOENT);
	assert_int_equal(peer_user_parse("nosuch_machine$", &uid), -ENOENT);
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		if (peer_user_parse(invalid[i], &uid) != -EINVAL)
			fail_msg("peer_user_parse(\"%s\") is not -EINVAL", invalid[i]);
	}
	memset(too_long, 'a', sizeof(too_long) - 1);
	too_long[sizeof(too_long) - 1] = '\0';
	assert_int_equal(peer_user_parse(too_long, &uid), -EINVAL);
	assert_int_equal(peer_user_parse(NULL, &uid), -EINVAL);
	assert_int_equal(uid, 4242);
}

static void loopback_tables(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		bool ip, host;
	} cases[] = {
	    {"127.0.0.1", true, true},
	    {"127.1.2.3", true, true},
	    {"127.255.255.255", true, true},
	    {"128.0.0.1", false, false},
	    {"126.255.255.255", false, false},
	    {"0.0.0.0", false, false},
	    {"10.0.0.1", false, false},
	    {"127.1", false, false},
	    {"127.0.0.1.", false, false},
	    {"::1", true, true},
	    {"[::1]", false, true},
	    {"[0:0:0:0:0:0:0:1]", false, true},
	    {"::ffff:127.0.0.1", true, true},
	    {"[::ffff:127.0.0.1]", false, true},
	    {"::FFFF:127.9.9.9", true, true},
	    {"::ffff:10.0.0.1", false, false},
	    {"[::ffff:10.0.0.1]", false, false},
	    {"::127.0.0.1", false, false},
	    {"::", false, false},
	    {"[::]", false, false},
	    {"::2", false, false},
	    {"fe80::1", false, false},
	    {"::1%lo", false, false},
	    {"[::1%25lo]", false, false},
	    {"[::1", false, false},
	    {"::1]", false, false},
	    {"[127.0.0.1]", false, false},
	    {"[]", false, false},
	    {"localhost", false, true},
	    {"LOCALHOST.", false, true},
	    {"LocalHost", false, true},
	    {"localhost..", false, false},
	    {"localhost.example", false, false},
	    {"foo.localhost", false, false},
	    {"localhos", false, false},
	    {"", false, false},
	    {" 127.0.0.1", false, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (peer_ip_is_loopback(cases[i].s) != cases[i].ip)
			fail_msg("peer_ip_is_loopback(\"%s\") is not %d", cases[i].s, cases[i].ip);
		if (peer_host_is_loopback(cases[i].s) != cases[i].host)
			fail_msg("peer_host_is_loopback(\"%s\") is not %d", cases[i].s,
				 cases[i].host);
	}
	assert_false(peer_ip_is_loopback(NULL));
	assert_false(peer_host_is_loopback(NULL));
}

static void endpoint_forms(void **state)
{
	(void)state;
	struct peer_endpoint a, b;
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(3000)};
	struct sockaddr_un un = {.sun_family = AF_UNIX};

	assert_int_equal(peer_endpoint_parse("::ffff:127.0.0.1", 3000, &a), 0);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(peer_endpoint_parse("127.0.0.1", 3000, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(a.port, 3000);
	assert_int_equal(a.addr[0], 127);
	assert_int_equal(peer_endpoint_parse("::1", 1, &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(a.addr[15], 1);

	inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
	assert_int_equal(peer_endpoint_from_sockaddr((struct sockaddr *)&in6, sizeof(in6), &a), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(peer_endpoint_from_sockaddr((struct sockaddr *)&in6, 8, &a), -EINVAL);
	assert_int_equal(peer_endpoint_from_sockaddr((struct sockaddr *)&un, sizeof(un), &a),
			 -EAFNOSUPPORT);

	assert_int_equal(peer_endpoint_parse("127.0.0.1", 0, &a), -EINVAL);
	assert_int_equal(peer_endpoint_parse("127.0.0.1", -1, &a), -EINVAL);
	assert_int_equal(peer_endpoint_parse("127.0.0.1", 65536, &a), -EINVAL);
	assert_int_equal(peer_endpoint_parse("[::1]", 1, &a), -EINVAL);
	assert_int_equal(peer_endpoint_parse("::1%lo", 1, &a), -EINVAL);
	assert_int_equal(peer_endpoint_parse("localhost", 1, &a), -EINVAL);
	assert_int_equal(peer_endpoint_parse(NULL, 1, &a), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(owner_over_ipv4),
	    cmocka_unit_test(owner_over_ipv6),
	    cmocka_unit_test(owner_over_ipv4_mapped),
	    cmocka_unit_test(owner_of_a_request_sock),
	    cmocka_unit_test(request_sock_of_a_closed_listener),
	    cmocka_unit_test(no_such_connection),
	    cmocka_unit_test(closing_server_end),
	    cmocka_unit_test(other_network_namespace_sees_nothing),
	    cmocka_unit_test(owner_of_another_user),
	    cmocka_unit_test(netlink_denied_falls_back_to_proc),
	    cmocka_unit_test(proc_tables_as_text),
	    cmocka_unit_test(unix_owner),
	    cmocka_unit_test(user_parse),
	    cmocka_unit_test(loopback_tables),
	    cmocka_unit_test(endpoint_forms),
	};

	return cmocka_run_group_tests_name("peer", tests, NULL, NULL);
}
