import AMQPProtocol
import DequeModule
import WarrenCore

/// Publisher confirms of one channel: the sequence numbers given to publishes, what each one's outcome is, and the
/// confirms still to send, coalesced with `multiple`.
///
/// A publish is acknowledged when every queue took it (and, once storage exists, when its storage token is safe),
/// negatively acknowledged when a queue refused it. Confirms go out in sequence order: an outcome that waits holds
/// back those after it. While nothing waits, the tracker keeps no per-publish state: a run of immediate acks is
/// a counter ("safe up to").
public struct ConfirmTracker: Sendable {
  /// What became of one publish.
  public enum Outcome: Sendable, Equatable {
    /// Safe: acknowledge it.
    case ack
    /// Refused: basic.nack.
    case nack
    /// Accepted, safe once storage completes this token.
    case waiting(StorageToken)
  }

  /// One confirm frame to send.
  public struct Confirm: Sendable, Equatable {
    /// basic.ack or basic.nack.
    public var method: AMQPMethod
    /// How many publishes it answers.
    public var count: Int
  }

  struct Entry: Sendable {
    var sequence: UInt64
    var outcome: Outcome
  }

  /// The sequence number of the last publish.
  public private(set) var published: UInt64 = 0
  /// Every publish up to this one has been answered.
  public private(set) var confirmedUpTo: UInt64 = 0
  /// Every publish up to this one is safe (an ack to send, or sent).
  public private(set) var safeUpTo: UInt64 = 0
  /// Outcomes after `safeUpTo`, in order: the first is not an ack.
  private var pending = Deque<Entry>()

  public init() {}

  /// Publishes whose confirm is not sent yet.
  public var unconfirmed: Int { Int(self.published - self.confirmedUpTo) }

  /// Gives the next publish its sequence number and records its outcome; returns the sequence number.
  @inlinable
  @discardableResult
  public mutating func record(_ outcome: Outcome) -> UInt64 {
    let sequence = self.nextSequence()
    if outcome == .ack && self.isSettledUpToPublished {
      self.markSafe(sequence)
    } else {
      self.append(sequence, outcome)
    }
    return sequence
  }

  @usableFromInline mutating func nextSequence() -> UInt64 {
    self.published += 1
    return self.published
  }

  @usableFromInline var isSettledUpToPublished: Bool { self.pending.isEmpty }

  @usableFromInline mutating func markSafe(_ sequence: UInt64) {
    self.safeUpTo = sequence
  }

  @usableFromInline mutating func append(_ sequence: UInt64, _ outcome: Outcome) {
    self.pending.append(Entry(sequence: sequence, outcome: outcome))
  }

  /// Storage made everything up to `token` durable: publishes waiting for it become acks.
  public mutating func storageCompleted(upTo token: StorageToken) {
    for index in self.pending.indices {
      if case .waiting(let waited) = self.pending[index].outcome, waited <= token {
        self.pending[index].outcome = .ack
      }
    }
  }

  /// Storage could not make everything up to `token` durable (a write or sync failed): the publishes still waiting
  /// for it or an earlier token become nacks.
  public mutating func storageFailed(upTo token: StorageToken) {
    for index in self.pending.indices {
      if case .waiting(let waited) = self.pending[index].outcome, waited <= token {
        self.pending[index].outcome = .nack
      }
    }
  }

  /// The next confirm to send, or nil when everything answerable is answered. Call until nil.
  public mutating func nextConfirm() -> Confirm? {
    while let head = self.pending.first, head.outcome == .ack {
      self.safeUpTo = head.sequence
      self.pending.removeFirst()
    }
    if self.safeUpTo > self.confirmedUpTo {
      let count = Int(self.safeUpTo - self.confirmedUpTo)
      self.confirmedUpTo = self.safeUpTo
      return Confirm(method: .basicAck(BasicAck(deliveryTag: self.safeUpTo, multiple: count > 1)), count: count)
    }
    guard let head = self.pending.first, head.outcome == .nack else { return nil }
    var last = head.sequence
    self.pending.removeFirst()
    while let next = self.pending.first, next.outcome == .nack {
      last = next.sequence
      self.pending.removeFirst()
    }
    let count = Int(last - self.confirmedUpTo)
    self.confirmedUpTo = last
    self.safeUpTo = last
    return Confirm(
      method: .basicNack(BasicNack(deliveryTag: last, multiple: count > 1, requeue: false)), count: count)
  }
}
