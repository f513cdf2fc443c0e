import Testing
import WorkflowServer

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
}
