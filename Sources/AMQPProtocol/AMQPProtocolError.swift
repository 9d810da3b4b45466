/// An error in bytes received from a peer. Each maps to the AMQP reply code a broker answers it with.
public enum AMQPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The eight bytes before the first frame were not `AMQP 0 0 9 1`.
  case badProtocolHeader([UInt8])
  /// A frame did not end with the frame-end octet 0xCE.
  case badFrameEnd(UInt8)
  /// A frame's size exceeded the negotiated frame_max.
  case frameTooLarge(size: Int, max: Int)
  /// A frame type that AMQP 0-9-1 does not define.
  case unknownFrameType(UInt8)
  /// A method frame whose class and method ids name no method.
  case unknownMethod(classID: UInt16, methodID: UInt16)
  /// A payload ended before a value it announced.
  case truncated(String)
  /// A field table value with a type tag no broker knows.
  case unknownFieldType(UInt8)
  /// A short string longer than 255 bytes, or another value out of its range.
  case invalidValue(String)

  /// The reply code of the connection.close a broker sends for this error.
  public var replyCode: UInt16 {
    switch self {
    case .badProtocolHeader, .badFrameEnd, .frameTooLarge, .unknownFrameType, .truncated, .unknownFieldType,
      .invalidValue:
      return 501  // FRAME_ERROR
    case .unknownMethod:
      return 540  // NOT_IMPLEMENTED
    }
  }

  /// The text of the connection.close, in RabbitMQ's style.
  public var description: String {
    switch self {
    case .badProtocolHeader(let bytes):
      return "FRAME_ERROR - bad protocol header \(bytes)"
    case .badFrameEnd(let octet):
      return "FRAME_ERROR - frame end octet \(octet), expected 206"
    case .frameTooLarge(let size, let max):
      return "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,\(size),\(max)}"
    case .unknownFrameType(let type):
      return "FRAME_ERROR - unknown frame type \(type)"
    case .unknownMethod(let classID, let methodID):
      return "NOT_IMPLEMENTED - unknown method class \(classID) method \(methodID)"
    case .truncated(let what):
      return "FRAME_ERROR - truncated \(what)"
    case .unknownFieldType(let tag):
      return "FRAME_ERROR - unknown field table type '\(Character(Unicode.Scalar(tag)))'"
    case .invalidValue(let what):
      return "FRAME_ERROR - invalid \(what)"
    }
  }
}
