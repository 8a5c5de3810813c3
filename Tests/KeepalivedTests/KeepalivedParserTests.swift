import Control
import Packet
import XCTest
@testable import Keepalived

final class KeepalivedParserTests: XCTestCase {
    /// The layout of keepalived's own sample (keepalived.conf.SAMPLE): global_defs, VRRP, a NAT service.
    func testSampleLayoutWithVRRPAndGlobals() throws {
        let text = """
        ! Configuration File for keepalived

        global_defs {
           notification_email {
             acassen@firewall.loc
           }
           notification_email_from Alexandre.Cassen@firewall.loc
           smtp_server 192.168.200.1
           smtp_connect_timeout 30
           router_id LVS_DEVEL
        }

        vrrp_instance VI_1 {
            state MASTER
            interface eth0
            virtual_router_id 51
            priority 100
            advert_int 1
            authentication {
                auth_type PASS
                auth_pass 1111
            }
            virtual_ipaddress {
                192.168.200.16
            }
        }

        virtual_server 10.10.10.2 1358 {
            delay_loop 6
            lb_algo rr
            lb_kind NAT
            persistence_timeout 50
            protocol TCP

            sorry_server 192.168.200.200 1358

            real_server 192.168.200.2 1358 {
                weight 1
                HTTP_GET {
                    url {
                      path /testurl/test.jsp
                      digest 640205b7b0fc66c1ea91c463fac6334d
                    }
                    url {
                      path /testurl2/test.jsp
                      status_code 200 301-302
                    }
                    connect_timeout 3
                    retry 3
                    delay_before_retry 3
                }
            }
            real_server 192.168.200.3 1358 {
                weight 2
                TCP_CHECK {
                    connect_timeout 4
                }
            }
        }
        """
        let config = try KeepalivedParser.parse(text)
        XCTAssertEqual(config.skipped.count, 2)
        XCTAssertTrue(config.skipped[0].contains("keepalived.conf:3: skipped global_defs"), config.skipped[0])
        XCTAssertTrue(config.skipped[1].contains("keepalived.conf:13: skipped vrrp_instance VI_1"), config.skipped[1])
        XCTAssertEqual(RulesFile.save(config.director), """
            -A -t 10.10.10.2:1358 -s rr -p 50
            -a -t 10.10.10.2:1358 -r 192.168.200.2:1358 -m -w 1
            -a -t 10.10.10.2:1358 -r 192.168.200.3:1358 -m -w 2

            """)
        let service = try XCTUnwrap(config.services.first)
        XCTAssertEqual(service.sorryServer?.config.endpoint.description, "192.168.200.200:1358")
        let http = service.reals[0].checkers[0]
        XCTAssertEqual(http.connectTimeout, 3)
        XCTAssertEqual(http.retry, 3)
        XCTAssertEqual(http.delayBeforeRetry, 3)
        XCTAssertEqual(http.delayLoop, 6)
        guard case .http(let check) = http.kind else { return XCTFail("\(http.kind)") }
        XCTAssertEqual(check.urls.count, 2)
        XCTAssertEqual(check.urls[0].digest, "640205b7b0fc66c1ea91c463fac6334d")
        XCTAssertTrue(check.urls[1].accepts(status: 301))
        XCTAssertFalse(check.urls[1].accepts(status: 404))
        XCTAssertTrue(check.urls[0].accepts(status: 204))
        let tcp = service.reals[1].checkers[0]
        XCTAssertEqual(tcp.kind, .tcp)
        XCTAssertEqual(tcp.connectTimeout, 4)
        XCTAssertEqual(tcp.retry, 1)
        XCTAssertEqual(tcp.delayBeforeRetry, 1)
    }

    /// A DR layout with a group, braces on their own lines, quoted scripts, every checker kind and includes.
    func testGroupsIncludesAndEveryChecker() throws {
        let files: [String: String] = [
            "/etc/keepalived/keepalived.conf": """
            global_defs {
                enable_script_security
            }
            include conf.d/*
            virtual_server_group web {
                192.0.2.10 80
                192.0.2.20-21 80
            }
            virtual_server group web
            {
                lvs_sched wrr
                lvs_method DR
                delay_loop 2
                retry 2
                inhibit_on_failure
                quorum 2
                hysteresis 1
                quorum_up "/usr/local/bin/up web"
                quorum_down /usr/local/bin/down
                real_server 198.51.100.11 80 {
                    weight 3
                    notify_up "/bin/echo up"
                    notify_down "/bin/echo down"
                    SSL_GET {
                        url {
                            path /health
                            status_code 200
                        }
                        virtualhost www.example.com
                        enable_sni
                    }
                    MISC_CHECK {
                        misc_path "/usr/local/bin/check --port 80"
                        misc_timeout 5
                        misc_dynamic
                    }
                }
                real_server 198.51.100.12 80 {
                    alpha
                    TCP_CHECK {
                        connect_ip 198.51.100.112
                        connect_port 8080
                        bindto 198.51.100.1
                        warmup 4
                    }
                }
            }
            """,
            "/etc/keepalived/conf.d/dns.conf": """
            virtual_server 2001:db8::53 53 {  # DNS over UDP
                protocol UDP
                lb_algo sh
                sh-port
                ops
                lb_kind TUN type gue port 6080 csum
                real_server 2001:db8:1::1 53 {
                    DNS_CHECK {
                        type A
                        name example.com
                    }
                    UDP_CHECK {
                        payload 0a0b
                        require_reply 0c
                        min_reply_length 1
                    }
                }
            }
            """,
        ]
        let config = try KeepalivedParser.load(path: "/etc/keepalived/keepalived.conf", files: .memory(files))
        XCTAssertEqual(RulesFile.save(config.director), """
            -A -u [2001:db8::53]:53 -s sh -b sh-port -o
            -a -u [2001:db8::53]:53 -r [2001:db8:1::1]:53 -i --tun-type gue --tun-port 6080 --tun-csum -w 1
            -A -t 192.0.2.10:80 -s wrr
            -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3
            -a -t 192.0.2.10:80 -r 198.51.100.12:80 -g -w 1
            -A -t 192.0.2.20:80 -s wrr
            -a -t 192.0.2.20:80 -r 198.51.100.11:80 -g -w 3
            -a -t 192.0.2.20:80 -r 198.51.100.12:80 -g -w 1
            -A -t 192.0.2.21:80 -s wrr
            -a -t 192.0.2.21:80 -r 198.51.100.11:80 -g -w 3
            -a -t 192.0.2.21:80 -r 198.51.100.12:80 -g -w 1

            """)
        XCTAssertEqual(config.services.count, 2)
        let dns = config.services[0].reals[0]
        XCTAssertEqual(dns.checkers.map(\.kind.name), ["DNS_CHECK", "UDP_CHECK"])
        XCTAssertEqual(dns.checkers[0].kind, .dns(DNSCheck(type: "A", name: "example.com")))
        XCTAssertEqual(dns.checkers[0].retry, 3)
        XCTAssertEqual(dns.checkers[1].kind, .udp(UDPCheck(payload: [0x0a, 0x0b], requireReply: true, expectedReply: [0x0c], minReplyLength: 1)))
        let web = config.services[1]
        XCTAssertEqual(web.name, "group web/tcp")
        XCTAssertEqual(web.keys.count, 3)
        XCTAssertEqual(web.quorum, 2)
        XCTAssertEqual(web.hysteresis, 1)
        XCTAssertEqual(web.quorumUp, "/usr/local/bin/up web")
        XCTAssertEqual(web.quorumDown, "/usr/local/bin/down")
        XCTAssertTrue(web.reals.allSatisfy(\.inhibitOnFailure))
        XCTAssertEqual(web.reals[0].notifyUp, "/bin/echo up")
        guard case .http(let ssl) = web.reals[0].checkers[0].kind else { return XCTFail() }
        XCTAssertTrue(ssl.tls)
        XCTAssertEqual(ssl.virtualhost, "www.example.com")
        XCTAssertEqual(ssl.sniName, "")
        XCTAssertEqual(ssl.urls, [HTTPCheck.URL(path: "/health", statusCodes: [200...200])])
        XCTAssertEqual(web.reals[0].checkers[0].retry, 2)
        XCTAssertEqual(web.reals[0].checkers[0].delayLoop, 2)
        XCTAssertEqual(web.reals[0].checkers[1].kind, .misc(MiscCheck(path: "/usr/local/bin/check --port 80", timeout: 5, dynamic: true)))
        let tcp = web.reals[1].checkers[0]
        XCTAssertTrue(tcp.alpha)
        XCTAssertEqual(tcp.warmup, 4)
        XCTAssertEqual(tcp.target(for: web.reals[1].endpoint).description, "198.51.100.112:8080")
        XCTAssertEqual(tcp.bindTo, IPAddress("198.51.100.1"))
        XCTAssertEqual(tcp.location, SourceLocation(file: "/etc/keepalived/keepalived.conf", line: 40))
    }

    /// Persistence granularity as a dotted mask, a sorry server with its own method and inhibit.
    func testPersistenceAndSorryServer() throws {
        let config = try KeepalivedParser.parse("""
            virtual_server 192.0.2.10 443 {
                lb_algo wlc
                lb_kind DR
                persistence_timeout 300
                persistence_granularity 255.255.255.0
                sorry_server 198.51.100.99 443
                sorry_server_inhibit
                real_server 198.51.100.11 443 { weight 2 }
            }
            """)
        XCTAssertEqual(RulesFile.save(config.director), """
            -A -t 192.0.2.10:443 -s wlc -p 300 -M 255.255.255.0
            -a -t 192.0.2.10:443 -r 198.51.100.11:443 -g -w 2
            -a -t 192.0.2.10:443 -r 198.51.100.99:443 -g -w 0

            """)
        XCTAssertEqual(config.services[0].sorryServer?.inhibit, true)
    }

    func testRefusalsNameTheKeywordFileAndLine() {
        func refusal(_ text: String) -> String {
            do {
                _ = try KeepalivedParser.parse(text, file: "/etc/k.conf")
                return "accepted"
            } catch {
                return error.description
            }
        }
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n  lb_algo rr\n  bogus_keyword 1\n}"),
                       "/etc/k.conf:3: 'bogus_keyword' in virtual_server is not supported by XDirector")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n  real_server 10.0.0.1 80 {\n    TCP_CHECK {\n      regex x\n    }\n  }\n}"),
                       "/etc/k.conf:4: 'regex' in TCP_CHECK is not supported by XDirector")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n  real_server 10.0.0.1 80 {\n    HTTP_GET {\n      url {\n        path /\n        regex ok\n      }\n    }\n  }\n}"),
                       "/etc/k.conf:6: 'regex' in url is not supported by XDirector")
        XCTAssertEqual(refusal("virtual_server fwmark 1 {\n}"), "/etc/k.conf:1: 'virtual_server fwmark' is not supported by XDirector")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n protocol SCTP\n}"),
                       "/etc/k.conf:2: protocol SCTP is not supported by XDirector (TCP or UDP)")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n persistence_engine sip\n}"),
                       "/etc/k.conf:2: 'persistence_engine' in virtual_server is not supported by XDirector")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n real_server 10.0.0.1 80 {\n  MISC_CHECK {\n   misc_path /bin/true\n   user nobody\n  }\n }\n}"),
                       "/etc/k.conf:5: 'user' in MISC_CHECK is not supported by XDirector")
        XCTAssertEqual(refusal("vrrp_instance X {\n}\nnet_namespace blue\n"), "/etc/k.conf:3: 'net_namespace' is not supported by XDirector")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n lb_algo nope\n}").prefix(42), "/etc/k.conf:2: unknown scheduler 'nope' (s")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n real_server 10.0.0.1 80 {\n  weight 70000\n }\n}"),
                       "/etc/k.conf:3: Real server weight 70000 is outside range 0-65535")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 10.0.0.1 8080\n}").hasPrefix("/etc/k.conf:1: -t 192.0.2.1:80: real server port 8080 differs"), true)
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n lb_kind TUN type gue\n}"),
                       "/etc/k.conf:2: gue tunnels require port, otherwise cannot have port")
        XCTAssertEqual(refusal("virtual_server group nope {\n}"), "/etc/k.conf:1: virtual_server_group nope is not defined")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n lb_algo rr\n"), "/etc/k.conf:1: 'virtual_server' block is not closed")
        XCTAssertEqual(refusal("}\n"), "/etc/k.conf:1: '}' without a block to close")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n real_server 10.0.0.1 80 {\n  HTTP_GET {\n   connect_timeout 2\n  }\n }\n}"),
                       "/etc/k.conf:3: HTTP_GET needs at least one url")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n real_server 10.0.0.1 80 {\n  HTTP_GET {\n   url {\n    path /\n    digest xyz\n   }\n  }\n }\n}"),
                       "/etc/k.conf:6: invalid digest 'xyz': expected 32 hex digits (MD5)")
        XCTAssertEqual(refusal("virtual_server 192.0.2.1 80 {\n ops\n}"), "/etc/k.conf:2: ops (one-packet scheduling) applies to UDP services only")
        XCTAssertEqual(refusal("include /missing/file.conf\nvirtual_server 192.0.2.1 80 {\n}"), "accepted")
    }

    func testIncludedFileErrorsNameTheIncludedFile() {
        let files: [String: String] = ["/k/main.conf": "include extra.conf\n", "/k/extra.conf": "\n\nvirtual_server 192.0.2.1 80 {\n  wat\n}\n"]
        XCTAssertThrowsError(try KeepalivedParser.load(path: "/k/main.conf", files: .memory(files))) { error in
            XCTAssertEqual("\(error)", "/k/extra.conf:4: 'wat' in virtual_server is not supported by XDirector")
        }
    }

    func testCommentsQuotesAndOneLineBlocks() throws {
        let config = try KeepalivedParser.parse("""
            virtual_server 192.0.2.1 80 { lb_algo rr ; }
            """.replacingOccurrences(of: " ;", with: ""))
        XCTAssertEqual(config.director.services.first?.scheduler.name, "rr")
        let tokens = KeepalivedSyntax.tokenize("a \"b c\" d # e\n! f\nx{y}", file: "f")
        XCTAssertEqual(tokens.map { $0.map(\.text) }, [["a", "b c", "d"], [], ["x", "{", "y", "}"]])
    }
}
