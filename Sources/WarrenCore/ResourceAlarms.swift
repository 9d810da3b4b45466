/// The resource alarms, and the limits that raise them.
///
/// The memory alarm looks first at what the broker accounts for (message bytes queued and unacknowledged, partial
/// frames and bodies, outbound buffers): that falls as soon as a queue is purged or consumed, where the process's
/// resident memory may not (the allocator keeps freed pages). Resident memory is a backstop, for what the accounting
/// does not see, at ``residentBackstop`` times the limit. The alarm clears below ``clearBelow`` times the limit, so it
/// does not flap.
public struct ResourceAlarms: Sendable, Equatable {
  /// The memory in use above which publishers are blocked.
  public var memoryLimit = 0
  /// The free disk space below which publishers are blocked.
  public var diskFreeLimit = 0
  /// Whether the memory alarm is in effect.
  public var memory = false
  /// Whether the disk alarm is in effect.
  public var disk = false

  /// Resident memory above the limit times this raises the alarm whatever the accounting says.
  public static let residentBackstop = 1.5
  /// Once raised, the alarm clears when the accounted bytes fall below the limit times this.
  public static let clearBelow = 0.9

  public init(memoryLimit: Int = 0, diskFreeLimit: Int = 0, memory: Bool = false, disk: Bool = false) {
    self.memoryLimit = memoryLimit
    self.diskFreeLimit = diskFreeLimit
    self.memory = memory
    self.disk = disk
  }

  /// Whether any alarm is in effect.
  public var any: Bool { self.memory || self.disk }

  /// Whether the memory alarm is in effect after a reading of the accounted bytes and the resident memory.
  public func memoryAlarm(held: Int, resident: Int) -> Bool {
    guard self.memoryLimit > 0 else { return false }
    let limit = Double(self.memoryLimit)
    if Double(resident) > limit * Self.residentBackstop { return true }
    return self.memory ? Double(held) >= limit * Self.clearBelow : held > self.memoryLimit
  }
}
