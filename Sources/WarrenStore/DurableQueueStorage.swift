import DequeModule
import WarrenCore

/// The ready messages of a queue when the broker has a store. On a recoverable queue (durable, neither exclusive nor
/// auto-delete) persistent messages are stored in the ``MessageStore`` and their publishes wait for its sync. Other
/// messages are held in memory, and paged out to the store as transient records (never recovered) while the
/// broker holds much of its memory limit (``MessageStore/isUnderMemoryPressure``); then persistent messages beyond
/// the first few stay on disk too.
///
/// Beyond ``residentLimit`` messages or ``residentByteLimit`` bytes of bodies, a stored message is not kept in
/// memory: consecutive records of the queue in a segment are one ``RecordRun`` (a few words for thousands of
/// messages), read back one record after the other as they reach the head. Memory does not grow with the length of
/// the queue, as long as its records follow each other on disk.
public final class DurableQueueStorage: QueueStorage {
  /// Messages on disk: a run of records, and the sequence number of its next message (the rest follow it).
  struct StoredRun {
    var run: RecordRun
    var nextSequence: UInt32
  }

  /// A message in memory, or a run on disk (boxed: runs are few, and a slot stays the size of an entry).
  enum Slot {
    /// A message held in memory (its `storageReference` 0 when it is not stored).
    case entry(QueuedMessage)
    indirect case stored(StoredRun)

    var firstSequence: UInt32 {
      switch self {
      case .entry(let entry): return entry.sequence
      case .stored(let stored): return stored.nextSequence
      }
    }
  }

  /// The queue's number in the store (its records name it).
  public let queueID: UInt32
  /// Whether its persistent messages are kept across restarts.
  public let recoverable: Bool
  /// Messages (and their body bytes) a queue keeps in memory under memory pressure: a short queue stays there.
  static let transientFloor = 64
  static let transientByteFloor = 1 << 20
  let store: MessageStore
  /// Ready messages held in memory at most (beyond it, stored bodies stay on disk).
  public let residentLimit: Int
  /// Body bytes of ready messages held in memory at most.
  public let residentByteLimit: Int
  private var slots: Deque<Slot> = []
  public private(set) var count = 0
  public private(set) var bytes = 0
  public private(set) var residentBytes = 0
  public private(set) var residentCount = 0
  private var lastAppendStored = false
  /// Records that could not be read back (damaged after recovery): skipped.
  public private(set) var unreadable = 0

  /// A queue's storage, with the runs of records recovery gave back (their sequence numbers are 1, 2, ...).
  public init(
    queueID: UInt32, store: MessageStore, recoverable: Bool = true, recovered: [RecordRun] = [],
    residentLimit: Int = 4096, residentByteLimit: Int = 8 << 20
  ) {
    self.queueID = queueID
    self.recoverable = recoverable
    self.store = store
    self.residentLimit = residentLimit
    self.residentByteLimit = residentByteLimit
    var sequence: UInt32 = 1
    for run in recovered {
      self.slots.append(.stored(StoredRun(run: run, nextSequence: sequence)))
      sequence &+= UInt32(truncatingIfNeeded: run.count)
      self.count += run.count
      self.bytes += run.bytes
    }
  }

  /// How many slots (entries in memory and runs on disk) the queue keeps: its memory, apart from bodies.
  public var slotCount: Int { self.slots.count }

  public var pendingToken: StorageToken? { self.lastAppendStored ? self.store.pendingToken : nil }

  public func append(_ queued: QueuedMessage) {
    let message = queued.message
    let size = message.bodySize
    self.count += 1
    self.bytes += size
    guard self.recoverable && message.isPersistent else {
      self.lastAppendStored = false
      if self.mustPageOut {
        let location = self.store.append(
          message, queue: self.queueID, transient: true, enqueuedAt: queued.enqueuedAt)
        return self.appendStored(location, queued, size: size, transient: true)
      }
      return self.appendResident(queued, reference: 0)
    }
    let location = self.store.append(message, queue: self.queueID, enqueuedAt: queued.enqueuedAt)
    self.lastAppendStored = true
    if self.residentCount < self.residentLimit && self.residentBytes + size <= self.residentByteLimit
      && !self.hasStoredTail && !self.mustPageOut
    {
      return self.appendResident(queued, reference: location.reference)
    }
    self.appendStored(location, queued, size: size, transient: false)
  }

  /// On disk only: extends the last run when this record follows its last one.
  private func appendStored(_ location: RecordLocation, _ queued: QueuedMessage, size: Int, transient: Bool) {
    if case .stored(var stored) = self.slots.last, stored.run.segment == location.segment,
      stored.run.lastOffset == self.store.previousRecordOffset, !stored.run.redelivered,
      stored.run.isTransient == transient,
      stored.nextSequence &+ UInt32(truncatingIfNeeded: stored.run.count) == queued.sequence
    {
      stored.run.lastOffset = location.offset
      stored.run.count += 1
      stored.run.bytes += size
      self.slots[self.slots.count - 1] = .stored(stored)
    } else {
      let run = RecordRun(
        segment: location.segment, nextOffset: location.offset, lastOffset: location.offset, count: 1, bytes: size,
        redelivered: queued.redelivered, isTransient: transient)
      self.slots.append(.stored(StoredRun(run: run, nextSequence: queued.sequence)))
    }
  }

  /// Under memory pressure a queue keeps only its first few messages in memory.
  private var mustPageOut: Bool {
    self.store.isUnderMemoryPressure
      && (self.residentCount >= Self.transientFloor || self.residentBytes >= Self.transientByteFloor)
  }

  /// Whether the queue's tail is on disk: later messages go to disk too, until it drains (memory stays bounded
  /// and order is kept without holding bodies).
  private var hasStoredTail: Bool {
    if case .stored = self.slots.last { return true }
    return false
  }

  private func appendResident(_ queued: QueuedMessage, reference: UInt64) {
    self.residentCount += 1
    self.residentBytes += queued.message.bodySize
    var entry = queued
    entry.storageReference = reference
    self.slots.append(.entry(entry))
  }

  public func removeFirst() -> QueuedMessage? {
    while let first = self.slots.popFirst() {
      switch consume first {
      case .entry(let entry):
        self.count -= 1
        self.bytes -= entry.message.bodySize
        self.residentCount -= 1
        self.residentBytes -= entry.message.bodySize
        return entry
      case .stored(var stored):
        let location = RecordLocation(segment: stored.run.segment, offset: stored.run.nextOffset)
        let (message, size, enqueuedAt) = self.store.storedRecord(at: location)
        let sequence = stored.nextSequence
        guard let size else {
          // Not even the record's length can be read: the rest of this run is lost to damage.
          self.unreadable += stored.run.count
          self.count -= stored.run.count
          self.bytes -= stored.run.bytes
          self.store.released(segment: stored.run.segment, count: stored.run.count)
          continue
        }
        stored.run.count -= 1
        stored.run.nextOffset &+= UInt32(truncatingIfNeeded: size)
        stored.nextSequence &+= 1
        self.count -= 1
        let bodySize = message?.bodySize ?? 0
        stored.run.bytes -= bodySize
        self.bytes -= bodySize
        if stored.run.count == 0 {
          self.bytes -= stored.run.bytes  // what unreadable records in it had
        } else {
          self.slots.prepend(.stored(stored))
        }
        let reference = stored.run.isTransient ? location.transientReference : location.reference
        guard let message else {
          self.unreadable += 1
          self.release(reference)
          continue
        }
        return QueuedMessage(
          message: message, sequence: sequence, enqueuedAt: enqueuedAt, redelivered: stored.run.redelivered,
          storageReference: reference)
      }
    }
    return nil
  }

  /// A storage for the same queue in the same store (a priority level).
  public func makeSibling() -> any QueueStorage {
    DurableQueueStorage(
      queueID: self.queueID, store: self.store, recoverable: self.recoverable, residentLimit: self.residentLimit,
      residentByteLimit: self.residentByteLimit)
  }

  /// The head; a stored one is read back and kept in memory as the first entry.
  public func head() -> QueuedMessage? {
    if case .entry(let entry)? = self.slots.first { return entry }
    guard let message = self.removeFirst() else { return nil }
    self.count += 1
    self.bytes += message.message.bodySize
    self.residentCount += 1
    self.residentBytes += message.message.bodySize
    self.slots.prepend(.entry(message))
    return message
  }

  public func requeue(_ requeued: [QueuedMessage]) {
    guard !requeued.isEmpty else { return }
    let sorted = requeued.sorted { $0.precedes($1) }.map { Slot.entry($0) }
    for queued in requeued {
      self.count += 1
      self.bytes += queued.message.bodySize
      self.residentBytes += queued.message.bodySize
      self.residentCount += 1
    }
    self.slots.merge(sorted) { Int32(bitPattern: $0.firstSequence &- $1.firstSequence) < 0 }
  }

  /// Every ready message goes; each stored one is settled in the store (read back from its run to find it).
  public func purge() -> Int {
    let purged = self.count
    while let message = self.removeFirst() { self.settled(message) }
    return purged
  }

  /// The queue is gone: its records are dropped at recovery, so they are only released here, not acknowledged.
  public func queueDeleted() {
    for slot in self.slots {
      switch slot {
      case .entry(let entry) where entry.storageReference != 0:
        self.store.released(segment: RecordLocation(reference: entry.storageReference).segment, count: 1)
      case .stored(let stored): self.store.released(segment: stored.run.segment, count: stored.run.count)
      default: break
      }
    }
    self.slots.removeAll()
    self.count = 0
    self.bytes = 0
    self.residentBytes = 0
    self.residentCount = 0
  }

  public func settled(_ message: QueuedMessage) {
    guard message.storageReference != 0 else { return }
    self.release(message.storageReference)
  }

  /// A stored message is done with: a persistent one is acknowledged in the store, a paged transient one only
  /// released (recovery drops it anyway).
  private func release(_ reference: UInt64) {
    let location = RecordLocation(reference: reference)
    if RecordLocation.isTransient(reference) {
      self.store.released(segment: location.segment, count: 1)
    } else {
      self.store.settled(location, queue: self.queueID)
    }
  }

  public func delivered(_ message: QueuedMessage) {
    guard message.storageReference != 0, !RecordLocation.isTransient(message.storageReference) else { return }
    self.store.delivered(RecordLocation(reference: message.storageReference), queue: self.queueID)
  }
}
