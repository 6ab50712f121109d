/* The version handshake's JSON: the capabilities object a VERSION message carries,
 * read by a small reader written for hostile input and written back.
 *
 * What is read: {"capabilities": {"max_msg_fds": N, "max_data_xfer_size": N,
 * "max_dma_maps": N, "pgsizes": N, "migration": {"pgsize": N, "max_bitmap_size": N},
 * "write_multiple": BOOL, "twin_socket": {"supported": BOOL, "fd_index": N}}}, every
 * member optional (QEMU's client sends all but twin_socket). N is a non-negative integer
 * below 2^64 written without fraction or exponent. The reader takes at most
 * USER_VERSION_JSON_MAX bytes nested USER_JSON_DEPTH deep; it skips members it does not
 * know (any valid JSON value), and refuses, with -EINVAL, a known member of the wrong
 * type or named twice, invalid JSON, trailing bytes, or a top level that is no object.
 * Member names are compared as written: one spelled with escapes is an unknown one. */
#ifndef LUAVFIO_USER_VERSION_H
#define LUAVFIO_USER_VERSION_H

#include "user_proto.h"

#define USER_JSON_DEPTH 8

/* The spec's defaults, nothing present, no twin socket (fd_index -1). */
void user_caps_default(struct user_caps *c);
/* Read `len` bytes of JSON (no NUL needed) into *c (defaults for what is absent). */
int user_caps_parse(const char *json, size_t len, struct user_caps *c);
/* Write {"capabilities":{...}} with the members `present` names into buf (cap bytes,
 * NUL included): its length, or -ENOSPC. */
int user_caps_format(char *buf, size_t cap, const struct user_caps *c);
/* What a peer's capabilities allow this end to send: max_data_xfer_size and
 * max_msg_fds, clamped to this implementation's limits (a peer's 0 stays 0: nothing of
 * that kind may be sent). */
void user_caps_send_limits(const struct user_caps *peer, struct user_limits *send);

#endif
