import NIOCore
import NIOPosix
import Testing

@testable import WarrenServer

#if canImport(Glibc)
  import Glibc
#endif

@Suite("Sync threads")
struct SyncThreadTests {
  /// A sync thread asks for nice -20; it gets it where the process may raise priorities (root, as in CI), and its
  /// own thread only: the caller's thread keeps its priority.
  @Test func aSyncThreadRaisesItsOwnPriorityOnly() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let pool = NIOThreadPool(numberOfThreads: 1)
    pool.start()
    let before = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    let (initial, raised) = try await pool.runIfActive(eventLoop: group.next()) { () -> (Int32, Int32) in
      let initial = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
      BrokerRuntime.raiseSyncThreadPriority()
      return (initial, getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))
    }.get()
    if geteuid() == 0 {
      #expect(raised == -20)
    } else {
      #expect(raised <= initial)
    }
    #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == before)
    try await pool.shutdownGracefully()
    try await group.shutdownGracefully()
  }
}
