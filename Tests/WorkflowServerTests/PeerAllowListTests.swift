import Testing
@testable import WorkflowServer

@Suite("Peer allow-list")
struct PeerAllowListTests {
    @Test func parsesCommaSeparatedNumericIDs() throws {
        #expect(try PeerAllowList.parseIDs("0") == [0])
        #expect(try PeerAllowList.parseIDs("0,1000") == [0, 1000])
        #expect(try PeerAllowList.parseIDs(" 0 , 1000,1000 ") == [0, 1000])
        #expect(try PeerAllowList.parseIDs("4294967294") == [4_294_967_294])
    }

    @Test(arguments: [
        ("", "the list is empty"),
        ("  ", "the list is empty"),
        ("0,", "has an empty item"),
        (",0", "has an empty item"),
        ("0,,1", "has an empty item"),
        ("root", "'root' is not a numeric id"),
        ("-1", "'-1' is not a numeric id"),
        ("+5", "'+5' is not a numeric id"),
        ("1000 1001", "'1000 1001' is not a numeric id"),
        ("4294967295", "'4294967295' is not a numeric id"),
        ("99999999999", "'99999999999' is not a numeric id"),
        ("١٢", "'١٢' is not a numeric id"),
    ])
    func refusesAnythingElseNamingTheItem(text: String, message: String) {
        #expect {
            _ = try PeerAllowList.parseIDs(text)
        } throws: { error in
            (error as? PeerAllowList.ParseError)?.message.contains(message) == true
        }
    }

    @Test func admitsAPeerWhoseUidOrGidIsListed() {
        let list = PeerAllowList(uids: [0, 1000], gids: [50])
        #expect(list.admits(uid: 1000, gid: 1000))
        #expect(list.admits(uid: 7, gid: 50))
        #expect(list.admits(uid: 0, gid: 0))
        #expect(!list.admits(uid: 7, gid: 7))
        #expect(!PeerAllowList(uids: [], gids: [50]).admits(uid: 0, gid: 0))
        #expect(!PeerAllowList().admits(uid: 0, gid: 0))
    }

    @Test func aRefusedPeerIsWarnedAboutOnceAMinuteWithTheCountInBetween() {
        var policy = RefusalLogPolicy(window: 60_000, maxPeers: 3)
        let first = policy.refused(uid: 1000, gid: 1000, now: 5)
        #expect(first == .init(warn: true, suppressed: 0))
        for i in 1...50 {
            #expect(policy.refused(uid: 1000, gid: 1000, now: 5 + UInt64(i) * 1_000).warn == false)
        }
        // Another peer, and unknown credentials, are warned about on their own.
        #expect(policy.refused(uid: 1001, gid: 1000, now: 10_000).warn)
        #expect(policy.refused(uid: nil, gid: nil, now: 10_000).warn)
        #expect(policy.refused(uid: nil, gid: nil, now: 10_001).warn == false)
        // The window has passed: a warning again, saying how many were not logged.
        #expect(policy.refused(uid: 1000, gid: 1000, now: 60_005) == .init(warn: true, suppressed: 50))
        #expect(policy.refused(uid: 1000, gid: 1000, now: 60_006) == .init(warn: false, suppressed: 1))
    }

    @Test func theRefusalLogForgetsPeersBeyondItsBound() {
        var policy = RefusalLogPolicy(window: 60_000, maxPeers: 2)
        #expect(policy.refused(uid: 1, gid: 1, now: 0).warn)
        #expect(policy.refused(uid: 2, gid: 2, now: 0).warn)
        // A third peer clears the table, so peer 1 is warned about again (memory stays bounded).
        #expect(policy.refused(uid: 3, gid: 3, now: 1).warn)
        #expect(policy.refused(uid: 1, gid: 1, now: 2).warn)
        #expect(policy.refused(uid: 1, gid: 1, now: 3).warn == false)
    }
}
