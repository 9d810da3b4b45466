import DequeModule
import WarrenCore

/// The ready messages of a durable queue: persistent ones are stored in the ``MessageStore`` (and their publishes
/// wait for its sync), transient ones only in memory. Beyond ``residentLimit`` messages or ``residentByteLimit``
/// bytes of bodies, a stored message's body is not kept in memory: it is read back from its segment when it
/// reaches the head, so memory does not grow with the length of the queue.
public final class DurableQueueStorage: QueueStorage {
  struct Entry {
    /// The message, when it is held in memory.
    var message: Message?
    /// Where it is stored (0: transient, memory only).
    var reference: UInt64
    var enqueuedAt: UInt64
    var sequence: UInt32
    var bodySize: UInt32
    var redelivered: Bool

    func precedes(_ other: Entry) -> Bool { Int32(bitPattern: self.sequence &- other.sequence) < 0 }
  }

  /// The queue's number in the store (its records name it).
  public let queueID: UInt32
  let store: MessageStore
  /// Ready messages held in memory at most (beyond it, stored bodies stay on disk).
  public let residentLimit: Int
  /// Body bytes of ready messages held in memory at most.
  public let residentByteLimit: Int
  private var entries: Deque<Entry> = []
  public private(set) var bytes = 0
  public private(set) var residentBytes = 0
  public private(set) var residentCount = 0
  private var lastAppendStored = false
  /// Records that could not be read back (damaged after recovery): skipped.
  public private(set) var unreadable = 0

  /// A queue's storage, with the messages recovery gave back (their sequence numbers are 1, 2, ...).
  public init(
    queueID: UInt32, store: MessageStore, recovered: [RecoveredMessage] = [], residentLimit: Int = 4096,
    residentByteLimit: Int = 8 << 20
  ) {
    self.queueID = queueID
    self.store = store
    self.residentLimit = residentLimit
    self.residentByteLimit = residentByteLimit
    self.entries.reserveCapacity(recovered.count)
    var sequence: UInt32 = 0
    for message in recovered {
      sequence &+= 1
      self.entries.append(
        Entry(
          message: nil, reference: message.location.reference, enqueuedAt: 0, sequence: sequence,
          bodySize: UInt32(clamping: message.bodySize), redelivered: message.redelivered))
      self.bytes += message.bodySize
    }
  }

  public var count: Int { self.entries.count }

  public var pendingToken: StorageToken? { self.lastAppendStored ? self.store.pendingToken : nil }

  public func append(_ queued: QueuedMessage) {
    let message = queued.message
    let size = message.bodySize
    var reference: UInt64 = 0
    if message.isPersistent {
      reference = self.store.append(message, queue: self.queueID).reference
      self.lastAppendStored = true
    } else {
      self.lastAppendStored = false
    }
    let resident =
      reference == 0 || (self.residentCount < self.residentLimit && self.residentBytes + size <= self.residentByteLimit)
    if resident {
      self.residentCount += 1
      self.residentBytes += size
    }
    self.bytes += size
    self.entries.append(
      Entry(
        message: resident ? message : nil, reference: reference, enqueuedAt: queued.enqueuedAt,
        sequence: queued.sequence, bodySize: UInt32(clamping: size), redelivered: queued.redelivered))
  }

  public func removeFirst() -> QueuedMessage? {
    while let entry = self.entries.popFirst() {
      self.bytes -= Int(entry.bodySize)
      let message: Message
      if let held = entry.message {
        self.residentCount -= 1
        self.residentBytes -= Int(entry.bodySize)
        message = held
      } else if let read = self.store.message(at: RecordLocation(reference: entry.reference)) {
        message = read
      } else {
        self.unreadable += 1
        self.store.settled(RecordLocation(reference: entry.reference), queue: self.queueID)
        continue
      }
      return QueuedMessage(
        message: message, sequence: entry.sequence, enqueuedAt: entry.enqueuedAt, redelivered: entry.redelivered,
        storageReference: entry.reference)
    }
    return nil
  }

  public func requeue(_ requeued: [QueuedMessage]) {
    guard !requeued.isEmpty else { return }
    let sorted = requeued.map { queued in
      Entry(
        message: queued.message, reference: queued.storageReference, enqueuedAt: queued.enqueuedAt,
        sequence: queued.sequence, bodySize: UInt32(clamping: queued.message.bodySize),
        redelivered: queued.redelivered)
    }.sorted { $0.precedes($1) }
    for entry in sorted {
      self.bytes += Int(entry.bodySize)
      self.residentBytes += Int(entry.bodySize)
      self.residentCount += 1
    }
    if let head = self.entries.first, head.precedes(sorted.last!) {
      var merged = Deque<Entry>()
      merged.reserveCapacity(self.entries.count + sorted.count)
      var i = sorted.startIndex
      for entry in self.entries {
        while i < sorted.endIndex && sorted[i].precedes(entry) {
          merged.append(sorted[i])
          i += 1
        }
        merged.append(entry)
      }
      merged.append(contentsOf: sorted[i...])
      self.entries = merged
    } else {
      self.entries.insert(contentsOf: sorted, at: 0)
    }
  }

  public func purge() -> Int {
    let count = self.entries.count
    for entry in self.entries where entry.reference != 0 {
      self.store.settled(RecordLocation(reference: entry.reference), queue: self.queueID)
    }
    self.entries.removeAll()
    self.bytes = 0
    self.residentBytes = 0
    self.residentCount = 0
    return count
  }

  public func settled(_ message: QueuedMessage) {
    guard message.storageReference != 0 else { return }
    self.store.settled(RecordLocation(reference: message.storageReference), queue: self.queueID)
  }

  public func delivered(_ message: QueuedMessage) {
    guard message.storageReference != 0 else { return }
    self.store.delivered(RecordLocation(reference: message.storageReference), queue: self.queueID)
  }
}
