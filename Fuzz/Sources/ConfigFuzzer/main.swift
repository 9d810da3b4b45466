import WarrenConfig
import WarrenCore

/// Any text given to the configuration loader gives a configuration or problems with line and column, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
  var registry = ExchangeRegistry()
  registry.register(DirectExchangeType())
  do {
    let configuration = try ConfigLoader.load(text: text, file: "fuzz.yaml", registry: registry)
    try? configuration.apply(to: Broker())
  } catch {
    precondition(!error.problems.isEmpty, "a refused configuration names no problem")
  }
  return 0
}
