import AMQPProtocol
import NIOCore
import WarrenCore

/// The frame-level protocol of one channel as a value type: methods, and content (basic.publish + header +
/// body frames) assembled into whole messages; the close handshake. It takes frames and returns actions.
public struct ChannelStateMachine: Sendable {
  /// Where the channel is.
  public enum State: Sendable {
    case open
    case awaitingHeader(BasicPublish)
    case awaitingBody(BasicPublish, ContentHeader, body: ByteBuffer?, remaining: Int)
    /// The server sent channel.close and waits for close-ok; other frames are dropped.
    case closing
    case closed
  }

  /// What the handler must do.
  public enum Action: Sendable {
    /// Nothing (more frames needed, or a frame dropped while closing).
    case none
    /// Carry out a method (not basic.publish, whose content is awaited).
    case method(AMQPMethod)
    /// A whole message arrived.
    case publish(BasicPublish, ContentHeader, ByteBuffer)
    /// A soft error: send channel.close with it.
    case channelError(BrokerError, classID: UInt16, methodID: UInt16)
    /// A hard error: close the connection with it.
    case connectionError(BrokerError, classID: UInt16, methodID: UInt16)
    /// The client answered our channel.close: the channel number is free.
    case closed
  }

  public private(set) var state: State = .open
  let maxMessageSize: Int

  /// Creates an open channel's machine.
  public init(maxMessageSize: Int) {
    self.maxMessageSize = maxMessageSize
  }

  /// Whether the channel is closing or closed (no deliveries).
  public var isClosing: Bool {
    switch self.state {
    case .closing, .closed: return true
    default: return false
    }
  }

  /// A method frame arrived.
  public mutating func methodReceived(_ method: AMQPMethod) -> Action {
    switch self.state {
    case .closed:
      return .none
    case .closing:
      switch method {
      case .channelCloseOk:
        self.state = .closed
        return .closed
      case .channelClose:
        return .method(method)  // answered with close-ok; we still wait for ours
      default:
        return .none
      }
    case .awaitingHeader, .awaitingBody:
      return .connectionError(
        .unexpectedFrame("expected content header for class 60, got non content header frame instead"),
        classID: 60, methodID: BasicPublish.amqpMethodID)
    case .open:
      if case .basicPublish(let publish) = method {
        self.state = .awaitingHeader(publish)
        return .none
      }
      if case .channelClose = method { self.state = .closed }
      return .method(method)
    }
  }

  /// A basic.publish arrived (the fast path's entry, the same as ``methodReceived(_:)`` with it).
  @inline(__always)
  public mutating func publishReceived(_ publish: BasicPublish) -> Action {
    switch self.state {
    case .open:
      self.state = .awaitingHeader(publish)
      return .none
    default:
      return self.methodReceived(.basicPublish(publish))
    }
  }

  /// A content header frame arrived.
  public mutating func headerReceived(_ header: ContentHeader) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingHeader(let publish):
      if header.classID != 60 {
        return .connectionError(
          .unexpectedFrame("expected content header for class 60, got class \(header.classID)"), classID: 60,
          methodID: 40)
      }
      if header.bodySize > UInt64(self.maxMessageSize) {
        self.state = .open
        return .channelError(
          .preconditionFailed(
            "message size \(header.bodySize) is larger than configured max size \(self.maxMessageSize)"),
          classID: 60, methodID: 40)
      }
      if header.bodySize == 0 {
        self.state = .open
        return .publish(publish, header, ByteBuffer())
      }
      self.state = .awaitingBody(publish, header, body: nil, remaining: Int(header.bodySize))
      return .none
    default:
      return .connectionError(
        .unexpectedFrame("expected method frame, got non method frame instead"), classID: 0, methodID: 0)
    }
  }

  /// A content body frame arrived.
  public mutating func bodyReceived(_ part: ByteBuffer) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingBody(let publish, let header, var body, let remaining):
      let size = part.readableBytes
      if size > remaining {
        return .connectionError(
          .unexpectedFrame("content body of \(header.bodySize) bytes exceeded by \(size - remaining) bytes"),
          classID: 60, methodID: 40)
      }
      if body == nil && size == remaining {
        self.state = .open
        return .publish(publish, header, part)  // one frame: no copy
      }
      if body == nil {
        body = ByteBuffer()
        body!.reserveCapacity(Int(header.bodySize))
      }
      var part = part
      body!.writeBuffer(&part)
      if size == remaining {
        self.state = .open
        return .publish(publish, header, body!)
      }
      self.state = .awaitingBody(publish, header, body: body, remaining: remaining - size)
      return .none
    default:
      return .connectionError(
        .unexpectedFrame("expected method frame, got non method frame instead"), classID: 0, methodID: 0)
    }
  }

  /// The server sent channel.close: drop everything but close/close-ok from now on.
  public mutating func serverClosing() {
    self.state = .closing
  }
}
