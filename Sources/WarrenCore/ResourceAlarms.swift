/// The resource alarms, and the limits that raise them.
public struct ResourceAlarms: Sendable, Equatable {
  /// The resident memory above which publishers are blocked.
  public var memoryLimit = 0
  /// The free disk space below which publishers are blocked.
  public var diskFreeLimit = 0
  /// Whether the memory alarm is in effect.
  public var memory = false
  /// Whether the disk alarm is in effect.
  public var disk = false

  public init(memoryLimit: Int = 0, diskFreeLimit: Int = 0, memory: Bool = false, disk: Bool = false) {
    self.memoryLimit = memoryLimit
    self.diskFreeLimit = diskFreeLimit
    self.memory = memory
    self.disk = disk
  }

  /// Whether any alarm is in effect.
  public var any: Bool { self.memory || self.disk }
}
