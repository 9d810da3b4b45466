import DequeModule

/// Where a queue keeps its ready messages, each at its position (``QueuedMessage/sequence``). The in-memory store is
/// the default; a disk-backed store plugs in here and hears when a delivered message is settled.
public protocol QueueStorage: AnyObject {
  /// The number of ready messages.
  var count: Int { get }
  /// The total body bytes of the ready messages.
  var bytes: Int { get }
  /// The body bytes of the ready messages held in memory (what the memory alarm counts; a store keeps the rest on
  /// disk).
  var residentBytes: Int { get }
  /// The number of ready messages held in memory.
  var residentCount: Int { get }
  /// Adds a message at the tail.
  func append(_ message: QueuedMessage)
  /// Removes and returns the head.
  func removeFirst() -> QueuedMessage?
  /// The head without removing it (for expiry checks; a store may read it into memory).
  func head() -> QueuedMessage?
  /// Puts delivered messages back, each at the position its sequence number gives.
  func requeue(_ messages: [QueuedMessage])
  /// Removes every ready message and returns how many there were.
  func purge() -> Int
  /// A message taken from here is done with (acknowledged, rejected, or got with no-ack): a store forgets it.
  func settled(_ message: QueuedMessage)
  /// A message taken from here was delivered with a manual acknowledgement to come: a store remembers it, so that
  /// it comes back redelivered after a crash.
  func delivered(_ message: QueuedMessage)
  /// The storage token the last append waits for, or nil when it is safe already (in memory, or synced).
  var pendingToken: StorageToken? { get }
  /// The queue was deleted: every ready message goes (a store forgets them without writing each one off).
  func queueDeleted()
}

extension QueueStorage {
  public func settled(_ message: QueuedMessage) {}
  public func delivered(_ message: QueuedMessage) {}
  public var residentBytes: Int { self.bytes }
  public var residentCount: Int { self.count }
  public func queueDeleted() { _ = self.purge() }
  public var pendingToken: StorageToken? { nil }
}

/// Ready messages in memory, in a deque ordered by sequence number.
public final class InMemoryQueueStorage: QueueStorage {
  private var messages: Deque<QueuedMessage> = []
  public private(set) var bytes: Int = 0

  public init() {}

  public var count: Int { self.messages.count }

  public func append(_ message: QueuedMessage) {
    self.bytes += message.message.bodySize
    self.messages.append(message)
  }

  public func head() -> QueuedMessage? { self.messages.first }

  public func removeFirst() -> QueuedMessage? {
    guard let first = self.messages.popFirst() else { return nil }
    self.bytes -= first.message.bodySize
    return first
  }

  public func requeue(_ requeued: [QueuedMessage]) {
    guard !requeued.isEmpty else { return }
    let sorted = requeued.sorted { $0.precedes($1) }
    for message in sorted { self.bytes += message.message.bodySize }
    self.messages.merge(sorted) { $0.precedes($1) }
  }

  public func purge() -> Int {
    let n = self.messages.count
    self.messages.removeAll()
    self.bytes = 0
    return n
  }
}

extension Deque {
  /// Puts `sorted` (in order) among the elements (also in order) where `precedes` says they go: how requeued
  /// messages return to their places. The common case, all of them before the head, is one insertion at the front.
  public mutating func merge(_ sorted: [Element], by precedes: (Element, Element) -> Bool) {
    guard let last = sorted.last else { return }
    guard let head = self.first, precedes(head, last) else {
      self.insert(contentsOf: sorted, at: 0)
      return
    }
    var merged = Deque<Element>()
    merged.reserveCapacity(self.count + sorted.count)
    var i = sorted.startIndex
    for element in self {
      while i < sorted.endIndex && precedes(sorted[i], element) {
        merged.append(sorted[i])
        i += 1
      }
      merged.append(element)
    }
    merged.append(contentsOf: sorted[i...])
    self = merged
  }
}
