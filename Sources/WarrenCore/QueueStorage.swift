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
  /// Another storage of the same kind for the same queue (a priority queue keeps one per priority level).
  func makeSibling() -> any QueueStorage
  /// The storage that does the keeping (itself, or the first level of a ``PriorityQueueStorage``).
  var base: any QueueStorage { get }
}

extension QueueStorage {
  public func settled(_ message: QueuedMessage) {}
  public func delivered(_ message: QueuedMessage) {}
  public var residentBytes: Int { self.bytes }
  public var residentCount: Int { self.count }
  public func queueDeleted() { _ = self.purge() }
  public var pendingToken: StorageToken? { nil }
  public func makeSibling() -> any QueueStorage { InMemoryQueueStorage() }
  public var base: any QueueStorage { self }
}

/// A priority queue's ready messages (`x-max-priority`): one storage per level, the highest non-empty level first,
/// in order within a level. A message's priority above the maximum counts as the maximum; none counts as 0.
public final class PriorityQueueStorage: QueueStorage {
  private var levels: [any QueueStorage]
  private var lastLevel = 0
  /// The highest level that may hold messages (levels above it are empty): a dequeue looks from here down.
  private var highestUsed = 0
  public private(set) var count = 0
  public private(set) var bytes = 0

  /// Levels 0...maxPriority; `base` (with whatever it recovered) is level 0, the others its siblings. Recovered
  /// messages are sorted into their levels here (held in memory: a restart of a long priority queue reads it).
  public init(base: any QueueStorage, maxPriority: Int) {
    self.levels = [base] + (0..<max(0, maxPriority)).map { _ in base.makeSibling() }
    var recovered: [[QueuedMessage]] = Array(repeating: [], count: self.levels.count)
    var kept: [QueuedMessage] = []
    while let message = base.removeFirst() {
      let level = self.level(of: message)
      if level == 0 { kept.append(message) } else { recovered[level].append(message) }
    }
    base.requeue(kept)
    for (level, messages) in recovered.enumerated() where !messages.isEmpty { self.levels[level].requeue(messages) }
    self.count = self.levels.reduce(0) { $0 + $1.count }
    self.bytes = self.levels.reduce(0) { $0 + $1.bytes }
    self.highestUsed = self.levels.lastIndex { $0.count > 0 } ?? 0
  }

  private func level(of queued: QueuedMessage) -> Int {
    min(Int(queued.message.priority), self.levels.count - 1)
  }

  public var residentBytes: Int { self.levels.reduce(0) { $0 + $1.residentBytes } }
  public var residentCount: Int { self.levels.reduce(0) { $0 + $1.residentCount } }
  public var base: any QueueStorage { self.levels[0] }
  public var pendingToken: StorageToken? { self.levels[self.lastLevel].pendingToken }

  /// Runs `body` on a level and follows its count and bytes (a store's level may drop unreadable records).
  private func tracking<T>(_ level: any QueueStorage, _ body: (any QueueStorage) -> T) -> T {
    let (count, bytes) = (level.count, level.bytes)
    let result = body(level)
    self.count += level.count - count
    self.bytes += level.bytes - bytes
    return result
  }

  public func append(_ message: QueuedMessage) {
    self.lastLevel = self.level(of: message)
    self.tracking(self.levels[self.lastLevel]) { $0.append(message) }
    self.highestUsed = max(self.highestUsed, self.lastLevel)
  }

  /// The highest non-empty level (lowering `highestUsed` past the empty ones).
  private var highest: (any QueueStorage)? {
    while self.highestUsed > 0 && self.levels[self.highestUsed].count == 0 { self.highestUsed -= 1 }
    let level = self.levels[self.highestUsed]
    return level.count > 0 ? level : nil
  }

  public func removeFirst() -> QueuedMessage? {
    while let level = self.highest {
      if let message = self.tracking(level, { $0.removeFirst() }) { return message }
      if level.count > 0 { return nil }  // never spin on a level that counts messages it cannot give
    }
    return nil
  }

  public func head() -> QueuedMessage? {
    while let level = self.highest {
      if let message = self.tracking(level, { $0.head() }) { return message }
      if level.count > 0 { return nil }
    }
    return nil
  }

  public func requeue(_ messages: [QueuedMessage]) {
    var byLevel: [[QueuedMessage]] = Array(repeating: [], count: self.levels.count)
    for message in messages { byLevel[self.level(of: message)].append(message) }
    for (level, group) in byLevel.enumerated() where !group.isEmpty {
      self.tracking(self.levels[level]) { $0.requeue(group) }
      self.highestUsed = max(self.highestUsed, level)
    }
  }

  public func purge() -> Int {
    self.count = 0
    self.bytes = 0
    return self.levels.reduce(0) { $0 + $1.purge() }
  }

  public func settled(_ message: QueuedMessage) { self.levels[self.level(of: message)].settled(message) }
  public func delivered(_ message: QueuedMessage) { self.levels[self.level(of: message)].delivered(message) }

  public func queueDeleted() {
    for level in self.levels { level.queueDeleted() }
    self.count = 0
    self.bytes = 0
  }
  public func makeSibling() -> any QueueStorage { self.levels[0].makeSibling() }
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
