#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process at the other end of an accepted Unix socket, as the kernel recorded it at
/// `connect(2)`. Reading it is one non-blocking `getsockopt`, cheap enough for the loop thread.
struct PeerCredentials: Sendable, Equatable {
    /// 0 where the platform does not tell (Darwin's `getpeereid`).
    var pid: Int32
    var uid: UInt32
    var gid: UInt32

    /// Reads the credentials of the peer of `fd`, or nil if the kernel does not give them.
    static func of(fd: Int32) -> PeerCredentials? {
        #if os(Linux)
        // `struct ucred` (pid_t pid; uid_t uid; gid_t gid) is only declared under _GNU_SOURCE,
        // which Swift's Glibc module does not set; this struct has the same layout.
        struct UCred {
            var pid: Int32 = 0
            var uid: UInt32 = 0
            var gid: UInt32 = 0
        }
        var cred = UCred()
        var length = socklen_t(MemoryLayout<UCred>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0,
            length == socklen_t(MemoryLayout<UCred>.size)
        else { return nil }
        return PeerCredentials(pid: cred.pid, uid: cred.uid, gid: cred.gid)
        #else
        var uid = uid_t()
        var gid = gid_t()
        guard getpeereid(fd, &uid, &gid) == 0 else { return nil }
        return PeerCredentials(pid: 0, uid: uid, gid: gid)
        #endif
    }
}
