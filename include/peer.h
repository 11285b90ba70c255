/* Who holds the other end of our connection to the forge: the uid that owns
 * the server's socket on this host (TCP, through NETLINK_SOCK_DIAG, else
 * /proc/net/tcp{,6}), or the peer of an AF_UNIX socket (SO_PEERCRED).  And
 * the small parsers --forge-user needs: a user, a loopback address, a
 * loopback host as a URL writes it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

/* One end of a TCP connection.  An IPv4-mapped IPv6 address is kept as
 * IPv4: the kernel files such a connection under its IPv4 addresses. */
struct peer_endpoint {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network byte order; the first 4 bytes for AF_INET */
	uint16_t port;	  /* host byte order */
};

/* Fills *ep from a numeric address as libcurl reports it ("127.0.0.1",
 * "::1", "::ffff:127.0.0.1"; no brackets, no zone) and a port in 1..65535.
 * Returns 0, or -EINVAL (*ep then unspecified). */
int peer_endpoint_parse(const char *ip, long port, struct peer_endpoint *ep);

/* Fills *ep from an AF_INET or AF_INET6 socket address of len bytes (as
 * getsockname() and getpeername() give it).  Returns 0, or -EAFNOSUPPORT
 * for another family, -EINVAL for a short address. */
int peer_endpoint_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct peer_endpoint *ep);

/* The uid owning the server end of the TCP connection from client to
 * server, which must both be ends on this host, in our network namespace:
 * the socket whose local end is server and whose remote end is client.
 * Asks NETLINK_SOCK_DIAG for that exact four-tuple, and reads
 * /proc/net/tcp{,6} when netlink is unavailable or finds nothing.  A
 * connection still in the listener's queue (SYN_RECV, or established but
 * not accept()ed yet) answers with the listener's owner.  Returns 0 with
 * *uid set; -ENOENT when no socket on this host serves that connection (the
 * server is elsewhere, in another network namespace, or gone); -ENOTCONN
 * when the server end is closing and has no owner left (TIME_WAIT, closed
 * by its process); -EAGAIN when /proc names more than one possible owner;
 * -EINVAL when the two ends are of different families; or another -errno
 * when neither netlink nor /proc could be asked.  *uid is set only on 0. */
int peer_tcp_owner(const struct peer_endpoint *server, const struct peer_endpoint *client,
		   uid_t *uid);

/* The uid that the other end of the connected AF_UNIX stream or seqpacket
 * socket fd had when it called listen() (or created the pair), from
 * SO_PEERCRED; it holds before accept().  Returns 0 with *uid set;
 * -ENOTSOCK, or -EAFNOSUPPORT for a socket that is not AF_UNIX;
 * -EPROTOTYPE for a datagram socket (connect() records no credentials);
 * -ENOTCONN when fd is not connected; or -errno from getsockopt(). */
int peer_unix_owner(int fd, uid_t *uid);

/* The owner of whatever the connected socket fd talks to: AF_UNIX through
 * peer_unix_owner(), TCP through getsockname(), getpeername() and
 * peer_tcp_owner() (the kernel's view of the ends, whatever libcurl was
 * told).  Returns as those do; -EPROTONOSUPPORT for an AF_INET or AF_INET6
 * socket that is not TCP. */
int peer_socket_owner(int fd, uid_t *uid);

/* Parses --forge-user: a decimal uid in 0..4294967294 (digits only, no sign
 * or space), or a user name ([A-Za-z_][A-Za-z0-9_.-]*, an optional final
 * '$', at most 256 bytes) looked up with getpwnam_r().  Returns 0 with *uid
 * set; -EINVAL for anything else; -ENOENT for a name with no such user; or
 * -errno from the lookup. */
int peer_user_parse(const char *spec, uid_t *uid);

/* Whether ip, a numeric address as libcurl reports it, is a loopback
 * address: 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104.  Brackets, zones and
 * short IPv4 forms ("127.1") are not addresses here: false. */
bool peer_ip_is_loopback(const char *ip);

/* Whether host, a URL's host as written, names this host's loopback: an
 * IPv4 literal in 127.0.0.0/8, an IPv6 loopback literal with or without
 * brackets ("[::1]", "::1", "[::ffff:127.0.0.1]"), or "localhost" in any
 * case with an optional final dot.  Anything else, names under localhost
 * included, is false. */
bool peer_host_is_loopback(const char *host);

/* The two ways peer_tcp_owner() looks, apart, for the unit tests.  The
 * netlink one returns -ENOENT when the kernel knows no such socket, and
 * -EPERM, -EACCES, -EAFNOSUPPORT or -EPROTONOSUPPORT when netlink is closed
 * to us.  The /proc one reads the tables from tcp and tcp6 (either may be
 * NULL: no such table), in the kernel's text format, and returns -EBADMSG
 * for a row that does not parse. */
int peer_tcp_owner_netlink(const struct peer_endpoint *server, const struct peer_endpoint *client,
			   uid_t *uid);
int peer_tcp_owner_proc(FILE *tcp, FILE *tcp6, const struct peer_endpoint *server,
			const struct peer_endpoint *client, uid_t *uid);
