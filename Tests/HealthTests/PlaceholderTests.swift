import XCTest
@testable import Health
final class HealthPlaceholderTests: XCTestCase { func testNothing() {} }
