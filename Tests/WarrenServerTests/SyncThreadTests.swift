import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import WarrenServer

#if canImport(Glibc)
  import Glibc
#endif

#if os(Linux)
  @Suite("Sync threads")
  struct SyncThreadTests {
    /// A sync thread asks for nice -20; it gets it where the process may raise priorities (CAP_SYS_NICE: root, as
    /// in CI), and for its own thread only: the caller's thread keeps its priority.
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
      if Self.mayRaisePriority {
        #expect(raised == -20)
      } else {
        #expect(raised == initial)
      }
      #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == before)
      try await pool.shutdownGracefully()
      try await group.shutdownGracefully()
    }

    /// Whether this process holds CAP_SYS_NICE (bit 23 of CapEff in /proc/self/status): root usually does.
    static var mayRaisePriority: Bool {
      guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") })
      else { return false }
      return (UInt64(line.dropFirst("CapEff:".count).filter(\.isHexDigit), radix: 16) ?? 0) & (1 << 23) != 0
    }
  }
#endif
