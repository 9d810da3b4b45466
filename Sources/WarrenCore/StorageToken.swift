/// A point in the message store's write order: a publish accepted before it is safe once storage reports this
/// token (or a later one) complete. Tokens only grow.
public struct StorageToken: Sendable, Hashable, Comparable {
  /// The store's sync generation.
  public var generation: UInt64

  public init(generation: UInt64) {
    self.generation = generation
  }

  public static func < (lhs: StorageToken, rhs: StorageToken) -> Bool { lhs.generation < rhs.generation }
}
