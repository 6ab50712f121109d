/* Lua binding: core.peercred(fd), the credentials of a UNIX socket's peer (SO_PEERCRED),
 * which luaposix does not expose: 36.3 has no SO_PEERCRED constant, and its getsockopt
 * reads any other option as one int, which for SO_PEERCRED is the pid alone (struct
 * ucred's first field), never the uid. The VMM's control socket refuses a peer that is
 * neither its owner nor root by them. */
#include "lv.h"
#include "l_kvm.h"

#include <errno.h>
#include <sys/socket.h>

static int l_peercred(lua_State *L)
{
    int fd = lv_checkfd(L, 1);
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return lv_syserrorf(L, errno, "getsockopt SO_PEERCRED", "fd %d", fd);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, cred.pid);
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, cred.uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, cred.gid);
    lua_setfield(L, -2, "gid");
    return 1;
}

/*** @module vfio.core */

/***
The credentials of a connected UNIX socket's peer, as the kernel recorded them when it
connected (SO_PEERCRED): what a server checks before it trusts a client.
@function peercred
@param fd the socket: an fd number or an object with `fileno()`
@treturn table `{pid=, uid=, gid=}`, or `nil, message, errno` (ENOTSOCK, ENOPROTOOPT for
a socket that is not AF_UNIX, EBADF)
*/

void lv_open_socket(lua_State *L)
{
    static const luaL_Reg fns[] = {{"peercred", l_peercred}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
