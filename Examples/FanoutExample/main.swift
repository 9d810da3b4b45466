// Fanout: every queue bound to a fanout exchange gets every message.
//
//   swift run fanout-example [amqp://guest:guest@127.0.0.1:5672/]
import WarrenClient

let url = CommandLine.arguments.dropFirst().first ?? "amqp://guest:guest@127.0.0.1:5672/"
let connection = try await AMQPConnection.connect(to: url, name: "fanout-example")
let channel = try await connection.openChannel()
try await channel.declareExchange("logs", type: "fanout")
var queues: [String] = []
for _ in 0..<3 {
  let queue = try await channel.declareQueue("", exclusive: true).name  // a server-named queue
  try await channel.bindQueue(queue, exchange: "logs")
  queues.append(queue)
}
try await channel.enableConfirms()
for message in ["info: started", "warning: disk at 80%", "info: stopped"] {
  try await channel.publish(message, exchange: "logs", routingKey: "")
}
for queue in queues {
  var received: [String] = []
  while let delivery = try await channel.get(queue: queue, noAck: true) { received.append(delivery.text) }
  print("\(queue): \(received.joined(separator: " | "))")
}
try await connection.close()
