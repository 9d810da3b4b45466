import AMQPProtocol
import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import WarrenCore
import WarrenStore
import WarrenSystem

#if canImport(Glibc)
  import Glibc
#endif

/// The broker and its connections on the event loop that owns them.
///
/// Deliveries are written into each connection's outbound buffer; the buffers of every connection touched while
/// reading are flushed once, when the read completes: one write and one flush per connection per batch.
public final class BrokerRuntime {
  /// The broker model.
  public let broker: Broker
  /// The event loop everything here runs on.
  public let eventLoop: any EventLoop
  let logger: Logger
  let serverProperties: FieldTable
  var connections: [UInt64: AMQPConnectionHandler] = [:]
  /// The resource alarms in effect and their limits.
  var alarms = ResourceAlarms()
  /// A graceful shutdown has begun.
  var isDraining = false
  /// The message store of the broker's data directory (nil: nothing is stored, as in most tests).
  var store: MessageStore?
  /// Where the store's syncs run, off the loop; nil runs them on the loop (a simulated file system in tests).
  var syncPool: NIOThreadPool?
  /// Tests: takes each sync batch instead of the pool, to run it later and post its result to `syncResults` as a
  /// sync thread would.
  var runSyncElsewhere: ((SyncBatch) -> Void)?
  /// Where the sync threads leave their results for the loop.
  let syncResults = SyncResults()
  /// How many of them the loop has handled.
  private var syncResultsTaken = 0
  /// Syncs handed to the sync threads and not handled back yet: while none is, a read checks nothing else.
  private var syncsOffLoop = 0
  private var dirty: [OutboundWriter] = []
  private var inReadCycle = false
  private var flushScheduled = false

  init(broker: Broker, eventLoop: any EventLoop, logger: Logger) {
    self.broker = broker
    self.eventLoop = eventLoop
    self.logger = logger
    self.serverProperties = [
      "product": .longString("Warren"),
      "version": .longString(broker.version),
      "platform": .longString("Swift"),
      "copyright": .longString("The Warren developers"),
      "information": .longString("An AMQP 0-9-1 broker in Swift on SwiftNIO"),
      "cluster_name": .longString("warren"),
      "capabilities": .table([
        "publisher_confirms": .bool(true),
        "exchange_exchange_bindings": .bool(true),
        "basic.nack": .bool(true),
        "consumer_cancel_notify": .bool(true),
        "authentication_failure_close": .bool(true),
        "per_consumer_qos": .bool(true),
        "connection.blocked": .bool(true),
      ]),
    ]
    broker.timers = self  // queue timers (TTL, x-expires) run on this loop
  }

  /// Starts what runs on the loop by itself: the consumer timeout checks.
  func startPeriodicWork() {
    let timeout = self.broker.limits.consumerTimeout
    self.startConsumerTimeoutChecks(interval: Self.consumerTimeoutInterval(timeout > 0 ? timeout : 2000))
  }

  /// Why publishers are blocked, for connection.blocked.
  var alarmReason: String {
    switch (self.alarms.memory, self.alarms.disk) {
    case (true, true): return "low on memory and disk space"
    case (true, false): return "low on memory"
    case (false, true): return "low on disk space"
    case (false, false): return ""
    }
  }

  /// What the broker holds in memory, as the memory alarm counts it: message bodies queued and delivered but
  /// unacknowledged (with an estimate of each message's own overhead), and each connection's partial frames, partial
  /// bodies and unsent bytes.
  func heldBytes() -> Int {
    var total = 0
    for vhost in self.broker.vhosts.values {
      for queue in vhost.queues.values {
        total += queue.storage.residentBytes + queue.unackedBytes
        total += (queue.storage.residentCount + queue.unackedCount) * Self.overheadPerMessage
      }
    }
    for connection in self.connections.values { total += connection.bufferedBytes }
    return total
  }

  /// A message's memory besides its body: the object, exchange, key, properties and its place in a queue.
  static let overheadPerMessage = 128

  /// Takes new readings of memory and free disk space and raises or clears the alarms. While one is in effect,
  /// connections that publish are blocked (see ``AMQPConnectionHandler/channelReadComplete(context:)``); when all
  /// clear, they are unblocked. Returns whether the memory alarm just cleared.
  @discardableResult
  func updateAlarms(heldBytes: Int, residentMemory: Int, diskFree: Int) -> Bool {
    self.updatePaging(heldBytes: heldBytes)
    var alarms = self.alarms
    alarms.memory = alarms.memoryAlarm(held: heldBytes, resident: residentMemory)
    alarms.disk = diskFree < alarms.diskFreeLimit
    guard alarms != self.alarms else { return false }
    let before = self.alarms
    self.alarms = alarms
    if alarms.memory != before.memory {
      if alarms.memory {
        self.logger.warning(
          "memory alarm set: \(heldBytes) B held (resident \(residentMemory) B) against the watermark \(alarms.memoryLimit) B; publishers are blocked"
        )
      } else {
        self.logger.notice("memory alarm cleared: \(heldBytes) B held, resident memory \(residentMemory) B")
      }
    }
    if alarms.disk != before.disk {
      if alarms.disk {
        self.logger.warning(
          "disk alarm set: free disk space \(diskFree) B is below the limit \(alarms.diskFreeLimit) B; publishers are blocked"
        )
      } else {
        self.logger.notice("disk alarm cleared: free disk space \(diskFree) B")
      }
    }
    if before.any && !alarms.any {
      for connection in self.connections.values { connection.resourceAlarmsCleared() }
    }
    return before.memory && !alarms.memory
  }

  /// Pages messages out to the store while the broker holds more than 40% of its memory limit (until it holds less
  /// than a quarter), so that a queue nobody consumes fills the disk, not the memory alarm. The margin
  /// is what publishers can add in the 100 ms between two readings.
  func updatePaging(heldBytes: Int) {
    guard let store = self.store, self.alarms.memoryLimit > 0 else { return }
    let paging = store.isUnderMemoryPressure
    if !paging && heldBytes > self.alarms.memoryLimit / 5 * 2 {
      store.isUnderMemoryPressure = true
      self.logger.notice(
        "paging messages to disk: \(heldBytes) B held, more than 40% of the memory limit \(self.alarms.memoryLimit) B"
      )
    } else if paging && heldBytes < self.alarms.memoryLimit / 4 {
      store.isUnderMemoryPressure = false
      self.logger.notice("messages kept in memory again: \(heldBytes) B held")
    }
  }

  /// Storage made everything up to `token` durable (reported on this loop, once per sync): every channel sends the
  /// confirms that waited for it, and the writes are flushed.
  func storageCompleted(upTo token: StorageToken) {
    self.forEachChannel { $0.storageCompleted(upTo: token) }
  }

  /// Storage could not make `token` durable: the publishes that waited for it are nacked.
  func storageFailed(upTo token: StorageToken) {
    self.forEachChannel { $0.storageFailed(upTo: token) }
  }

  /// Tells every channel of a storage result, then flushes what they wrote (unless a read will).
  /// Checks every channel's unacknowledged deliveries against their consumer timeouts, every `interval` (a
  /// repeated task on the loop; cheap while no delivery can have timed out).
  func startConsumerTimeoutChecks(interval: TimeAmount) {
    let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
    self.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
      let runtime = bound.value
      let now = runtime.broker.clock.refresh().uptimeNanoseconds
      runtime.forEachChannel { $0.checkConsumerTimeout(now: now) }
    }
  }

  /// How often consumer timeouts are checked: every second, or twice per timeout when it is shorter.
  static func consumerTimeoutInterval(_ timeout: Int) -> TimeAmount {
    .milliseconds(Int64(max(10, min(1000, timeout / 2))))
  }

  private func forEachChannel(_ body: (ServerChannel) -> Void) {
    for connection in self.connections.values {
      for channel in connection.channels.values { body(channel) }
    }
    if !self.inReadCycle { self.flushDirty() }
  }

  /// Writes what the store was given since the last commit and starts its sync, unless one is running (group
  /// commit: everything appended meanwhile shares the next sync).
  func commitStore() {
    guard let store = self.store, store.needsCommit else { return }
    let commit = store.commit()
    if let failed = commit.failed {
      self.logger.error(
        "message store: a write failed (\(commit.error.map { "\($0)" } ?? "")); the publishes waiting for it are nacked"
      )
      self.storageFailed(upTo: failed)
    }
    guard let batch = commit.sync else { return }
    if let runSyncElsewhere {
      self.syncsOffLoop += 1
      return runSyncElsewhere(batch)
    }
    guard let pool = self.syncPool else {
      return self.syncFinished(batch, error: batch.runCapturingError())
    }
    self.syncsOffLoop += 1
    let results = self.syncResults
    let loop = self.eventLoop
    let bound = NIOLoopBound(self, eventLoop: loop)
    pool.submit { state in
      var failure: StoreError? = StoreError(operation: "sync", path: "", errno: ECANCELED)
      if state == .active {
        Self.raiseSyncThreadPriority()
        failure = batch.runCapturingError()
      }
      results.post(batch, error: failure)
      loop.execute { bound.value.takeSyncResults() }
    }
  }

  /// Handles the syncs that finished (in any order: the store reports them in the order they started). Run by a
  /// task each sync thread queues, and sooner by ``pollSyncResults()`` while a read is being handled.
  func takeSyncResults() {
    guard self.syncResults.posted.load(ordering: .acquiring) != self.syncResultsTaken else { return }
    let finished = self.syncResults.take()
    self.syncResultsTaken &+= finished.count
    self.syncsOffLoop -= finished.count
    for (batch, error) in finished { self.syncFinished(batch, error: error) }
  }

  /// Between two messages of a read: a sync that finished meanwhile releases its confirms now, and they are
  /// written at once, instead of after the rest of the read (a read of a whole confirm window takes ~0.3 ms here).
  @inline(__always)
  func pollSyncResults() {
    guard self.syncsOffLoop > 0, self.inReadCycle,
      self.syncResults.posted.load(ordering: .relaxed) != self.syncResultsTaken
    else { return }
    self.takeSyncResults()
    self.flushConnections()
  }

  /// Gives the calling sync thread the highest priority the process may give (nice -20 when permitted, else
  /// unchanged): a sync thread uses almost no CPU, but one that waits for a busy core to start its `fdatasync`, or to
  /// report it, delays every confirm of its batch. A/B here (1 KiB persistent, 1p/1c, 11 pairs): +5% throughput.
  /// Linux keeps a nice value per thread (`PRIO_PROCESS` with 0 is the calling thread); called for every batch, as
  /// the pool's threads take batches in any order (one system call per batch, not per message).
  static func raiseSyncThreadPriority() {
    #if os(Linux)
      _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -20)
    #endif
  }

  private func syncFinished(_ batch: SyncBatch, error: StoreError?) {
    guard let store = self.store else { return }
    let (completed, failed) = store.syncCompleted(batch, error: error)
    if let failed {
      self.logger.error("message store: sync failed (\(error.map { "\($0)" } ?? "")); its publishes are nacked")
      self.storageFailed(upTo: failed)
    }
    if let completed { self.storageCompleted(upTo: completed) }
    // In the middle of a read (pollSyncResults), the read's end commits what it appends: one batch, not two (a
    // commit here made twice as many syncs and cost 30% more CPU per message in an A/B).
    if !self.inReadCycle { self.commitStore() }
  }

  /// A read started: flushes wait for its end.
  func readStarted() {
    self.inReadCycle = true
    self.broker.clock.refresh()
  }

  /// A read ended: flush every connection written to.
  func readCompleted() {
    self.inReadCycle = false
    self.flushDirty()
  }

  /// A connection has bytes to send.
  func markDirty(_ connection: OutboundWriter) {
    guard !connection.isDirty else { return }
    connection.isDirty = true
    self.dirty.append(connection)
    if !self.inReadCycle && !self.flushScheduled {
      self.flushScheduled = true
      let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
      self.eventLoop.execute {
        bound.value.flushScheduled = false
        bound.value.flushDirty()
      }
    }
  }

  func flushDirty() {
    self.commitStore()
    self.flushConnections()
  }

  private func flushConnections() {
    var i = 0
    while i < self.dirty.count {  // a flush may make more connections dirty
      let connection = self.dirty[i]
      connection.isDirty = false
      connection.flush()
      i += 1
    }
    self.dirty.removeAll(keepingCapacity: true)
  }
}

extension BrokerRuntime: QueueTimers {
  /// A queue's timer on the loop: the clock is refreshed, the queue does what is due, and what that wrote (dead
  /// letters delivered to consumers) is flushed. The task holds the runtime and the queue weakly: a timer far in
  /// the future keeps neither alive (nor makes a cycle through the event loop).
  public func schedule(_ queue: Queue, at deadline: UInt64) {
    let target = NIOLoopBound(TimerTarget(runtime: self, queue: queue), eventLoop: self.eventLoop)
    self.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(deadline)) {
      guard let runtime = target.value.runtime, let queue = target.value.queue else { return }
      runtime.broker.clock.refresh()
      queue.timerFired(deadline: deadline)
      runtime.flushDirty()
    }
  }
}

/// What a queue timer reaches when it fires, if both still exist.
private final class TimerTarget {
  weak var runtime: BrokerRuntime?
  weak var queue: Queue?

  init(runtime: BrokerRuntime, queue: Queue) {
    self.runtime = runtime
    self.queue = queue
  }
}

/// Finished syncs, handed from the sync threads to the loop: a lock taken once per batch on each side, and a count
/// the loop reads between messages (one atomic load) to notice a finished sync in the middle of a read.
final class SyncResults: Sendable {
  let posted = ManagedAtomic<Int>(0)
  private let results = NIOLockedValueBox<[(SyncBatch, StoreError?)]>([])

  func post(_ batch: SyncBatch, error: StoreError?) {
    self.results.withLockedValue {
      $0.append((batch, error))
      self.posted.wrappingIncrement(ordering: .releasing)
    }
  }

  func take() -> [(SyncBatch, StoreError?)] {
    self.results.withLockedValue { results in
      var taken: [(SyncBatch, StoreError?)] = []
      swap(&taken, &results)
      return taken
    }
  }
}
