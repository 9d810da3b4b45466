/// Whether a connection's socket is read, and why not, as one value: flow control (a queue the connection floods is
/// behind its consumers) and resource alarms (memory or disk), with the connection.blocked notification owed.
///
/// The handler tells it what happened (a read completed, a pause ended, the alarms cleared) and does what it answers:
/// turn reading off or on, send connection.blocked or connection.unblocked, start the pause timer.
struct ReadGate: Sendable, Equatable {
  /// The reasons reading is off.
  struct Reasons: OptionSet, Sendable, Equatable {
    let rawValue: UInt8
    /// A queue this connection publishes to is congested: paused for at most ``ReadGate/longestPause``.
    static let flowControl = Reasons(rawValue: 1)
    /// A resource alarm is in effect and this connection publishes.
    static let resourceAlarm = Reasons(rawValue: 2)
  }

  /// What the handler must do after an event.
  struct Action: Sendable, Equatable {
    /// Turn the socket's reading off (false: leave it) or on.
    var setReading: Bool?
    /// Send connection.blocked with the alarm's reason.
    var sendBlocked = false
    /// Send connection.unblocked.
    var sendUnblocked = false
    /// Schedule ``pauseEnded()`` after ``ReadGate/longestPause``.
    var startPauseTimer = false

    static let none = Action()
  }

  /// Only publishers that send at least this many messages per read are held back: one waiting for each confirm is
  /// never flooding anything.
  static let bulkPublishesPerRead = 64

  private(set) var reasons: Reasons = []
  /// connection.blocked was sent and connection.unblocked is owed.
  private(set) var blockedNotified = false
  /// A queue asked to hold this publisher back during the current read.
  private var throttleRequested = false

  /// Whether the socket is read.
  var isReading: Bool { self.reasons.isEmpty }
  /// Whether a resource alarm stopped reading (its heartbeats cannot be seen, so its silence does not count).
  var isBlockedByAlarm: Bool { self.reasons.contains(.resourceAlarm) }

  /// A queue this connection published to is congested.
  mutating func throttleRequestedByQueue() {
    self.throttleRequested = true
  }

  /// A read ended. `publishing`: it held publishes, or a message still arriving; `bulkPublishes`: how many
  /// publishes it held; `alarm`: a resource alarm is in effect; `clientWantsBlocked`: the client asked for
  /// connection.blocked.
  mutating func readCompleted(publishing: Bool, bulkPublishes publishes: Int, alarm: Bool, clientWantsBlocked: Bool)
    -> Action
  {
    var action = Action.none
    let wasReading = self.isReading
    if alarm && publishing && !self.reasons.contains(.resourceAlarm) {
      // As RabbitMQ: a connection that publishes during an alarm is told and not read until it clears. What this
      // read held is routed and confirmed; connections that only consume go on.
      self.reasons.insert(.resourceAlarm)
      if clientWantsBlocked && !self.blockedNotified {
        self.blockedNotified = true
        action.sendBlocked = true
      }
    }
    if self.throttleRequested && !self.reasons.contains(.flowControl) && publishes >= Self.bulkPublishesPerRead {
      self.reasons.insert(.flowControl)
      action.startPauseTimer = true
    }
    self.throttleRequested = false
    if wasReading && !self.isReading { action.setReading = false }
    return action
  }

  /// The queues caught up, or the pause timer fired.
  mutating func pauseEnded() -> Action {
    guard self.reasons.contains(.flowControl) else { return .none }
    self.reasons.remove(.flowControl)
    return self.isReading ? Action(setReading: true) : .none
  }

  /// Every resource alarm cleared.
  mutating func alarmsCleared() -> Action {
    var action = Action.none
    if self.blockedNotified {
      self.blockedNotified = false
      action.sendUnblocked = true
    }
    if self.reasons.contains(.resourceAlarm) {
      self.reasons.remove(.resourceAlarm)
      if self.isReading { action.setReading = true }
    }
    return action
  }
}
