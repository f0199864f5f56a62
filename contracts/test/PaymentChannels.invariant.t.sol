// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {Sig} from "./Base.t.sol";
import {PaymentChannels} from "../PaymentChannels.sol";
import {TestStablecoin} from "./mocks/Tokens.sol";
import {RevertingReceiver} from "./mocks/Actors.sol";

/// @notice Drives PaymentChannels with random mixes of every operation and keeps ghost books:
/// what each payee received from each channel (balance + deferred), what was deposited, and
/// flags for the safety properties checked by the invariant test below.
contract Handler {
    struct Ch {
        bytes32 id;
        uint8 payerIdx;
        address payee;
        address token;
        bytes32 salt;
    }

    PaymentChannels public immutable pc;
    TestStablecoin public immutable usd;
    uint256[3] internal payerKeys = [uint256(0xA1), 0xA2, 0xA3];
    address[3] public payers;
    address[3] public payees;
    Ch[] internal chans;

    mapping(bytes32 => uint256) public deposited;
    mapping(bytes32 => uint256) public payeeReceived;
    mapping(bytes32 => uint256) public lastClaimed;
    bool public claimedDecreased;
    bool public payeeOverpaid;
    bool public closeNotConserving;
    bool public reopened;
    bool public foreignVoucherPaid;
    uint256 public calls;
    /// @notice Successful actions by kind, to see that the mix reaches every path.
    mapping(bytes32 kind => uint256) public done;

    constructor() {
        pc = new PaymentChannels();
        usd = new TestStablecoin();
        for (uint256 i; i < 3; ++i) {
            payers[i] = vm.addr(payerKeys[i]);
            vm.deal(payers[i], type(uint128).max);
            usd.mint(payers[i], type(uint128).max);
            vm.prank(payers[i]);
            usd.approve(address(pc), type(uint256).max);
        }
        payees[0] = vm.addr(0xB1);
        payees[1] = vm.addr(0xB2);
        payees[2] = address(new RevertingReceiver()); // rejects ETH: exercises the pull-payment path
    }

    // ---------------------------------------------------------------- views for the invariants

    function channelCount() external view returns (uint256) {
        return chans.length;
    }

    function channelAt(uint256 i) external view returns (bytes32 id, address token) {
        return (chans[i].id, chans[i].token);
    }

    function accounts() external view returns (address[6] memory all) {
        for (uint256 i; i < 3; ++i) (all[i], all[i + 3]) = (payers[i], payees[i]);
    }

    // ---------------------------------------------------------------- helpers

    function _pick(uint256 seed) internal view returns (Ch memory c, bool ok) {
        if (chans.length == 0) return (c, false);
        return (chans[seed % chans.length], true);
    }

    function _value(address who, address token) internal view returns (uint256) {
        uint256 held = token == address(0) ? who.balance : usd.balanceOf(who);
        return held + pc.owed(who, token);
    }

    function _sign(uint8 payerIdx, bytes32 typehash, bytes32 id, uint256 amount, uint256 chainId, address vc)
        internal
        view
        returns (bytes memory)
    {
        return Sig.sign(payerKeys[payerIdx], Sig.digest(typehash, id, amount, chainId, vc));
    }

    function _voucher(Ch memory c, uint256 amount) internal view returns (bytes memory) {
        return _sign(c.payerIdx, Sig.VOUCHER, c.id, amount, block.chainid, address(pc));
    }

    function _consent(Ch memory c, uint256 amount) internal view returns (bytes memory) {
        uint256 key = c.payee == payees[0] ? 0xB1 : 0xB2;
        return Sig.sign(key, Sig.digest(Sig.CLOSE_CONSENT, c.id, amount, block.chainid, address(pc)));
    }

    /// @dev After every action: claimed never decreases while a channel lives, payees never got
    /// more than was deposited.
    function _after() internal {
        ++calls;
        for (uint256 i; i < chans.length; ++i) {
            bytes32 id = chans[i].id;
            PaymentChannels.Channel memory ch = pc.getChannel(id);
            if (ch.status != PaymentChannels.Status.Closed) {
                if (ch.claimed < lastClaimed[id]) claimedDecreased = true;
                lastClaimed[id] = ch.claimed;
            }
            if (payeeReceived[id] > deposited[id]) payeeOverpaid = true;
        }
    }

    function _amountFor(Ch memory c, uint256 seed) internal view returns (uint256) {
        PaymentChannels.Channel memory ch = pc.getChannel(c.id);
        // mostly useful vouchers: from a bit below `claimed` to a bit above `deposit`
        return seed % (ch.deposit + ch.deposit / 4 + 2);
    }

    // ---------------------------------------------------------------- actions

    function open(uint256 payerSeed, uint256 payeeSeed, uint256 amountSeed, uint32 cpSeed, bool token) external {
        Ch memory c;
        c.payerIdx = uint8(payerSeed % 3);
        c.payee = payees[payeeSeed % 3];
        if (c.payee == payees[2] && !token && amountSeed % 2 == 0) c.payee = payees[1];
        c.token = token ? address(usd) : address(0);
        c.salt = bytes32(chans.length);
        uint256 amount = 1 + (amountSeed % 1e24);
        uint64 cp = uint64(1 + (cpSeed % 3 days));
        vm.prank(payers[c.payerIdx]);
        c.id = pc.open{value: token ? 0 : amount}(c.payee, c.token, amount, cp, c.salt);
        chans.push(c);
        deposited[c.id] = amount;
        ++done["open"];
        _after();
    }

    function topUp(uint256 idx, uint256 amountSeed) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = 1 + (amountSeed % 1e22);
        vm.prank(payers[c.payerIdx]);
        pc.topUp{value: c.token == address(0) ? amount : 0}(c.id, amount);
        deposited[c.id] += amount;
        ++done["topUp"];
        _after();
    }

    function claim(uint256 idx, uint256 amountSeed) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = _amountFor(c, amountSeed);
        uint256 before = _value(c.payee, c.token);
        pc.claim(c.id, amount, _voucher(c, amount));
        payeeReceived[c.id] += _value(c.payee, c.token) - before;
        ++done["claim"];
        _after();
    }

    function claimMany(uint256 seed, uint8 countSeed) external {
        if (chans.length == 0) return;
        uint256 n = 1 + (countSeed % 5);
        PaymentChannels.Claim[] memory cs = new PaymentChannels.Claim[](n);
        uint256[] memory claimedBefore = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            Ch memory c = chans[uint256(keccak256(abi.encode(seed, i))) % chans.length];
            uint256 amount = _amountFor(c, uint256(keccak256(abi.encode(seed, i, "amount"))));
            cs[i] = PaymentChannels.Claim(c.id, amount, _voucher(c, amount));
            claimedBefore[i] = pc.getChannel(c.id).claimed;
        }
        pc.claimMany(cs);
        // attribute each channel's claimed increase once (duplicates in the batch included)
        for (uint256 i; i < n; ++i) {
            bool seen;
            for (uint256 j; j < i; ++j) if (cs[j].channelId == cs[i].channelId) seen = true;
            if (seen) continue;
            PaymentChannels.Channel memory ch = pc.getChannel(cs[i].channelId);
            if (ch.status != PaymentChannels.Status.Closed) payeeReceived[cs[i].channelId] += ch.claimed - claimedBefore[i];
        }
        ++done["claimMany"];
        _after();
    }

    function _closeBooks(Ch memory c, uint256 payeeBefore, uint256 payerBefore, uint256 claimedBefore) internal {
        uint256 toPayee = _value(c.payee, c.token) - payeeBefore;
        uint256 toPayer = _value(payers[c.payerIdx], c.token) - payerBefore;
        payeeReceived[c.id] += toPayee;
        if (claimedBefore + toPayee + toPayer != deposited[c.id]) closeNotConserving = true;
    }

    function closeByPayee(uint256 idx, uint256 amountSeed) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok || c.payee == payees[2]) return; // the contract payee closes in the unit tests
        uint256 amount = _amountFor(c, amountSeed);
        bytes memory v = _voucher(c, amount);
        uint256 claimedBefore = pc.getChannel(c.id).claimed;
        (uint256 pb, uint256 qb) = (_value(c.payee, c.token), _value(payers[c.payerIdx], c.token));
        vm.prank(c.payee);
        pc.closeByPayee(c.id, amount, v);
        _closeBooks(c, pb, qb, claimedBefore);
        ++done["closeByPayee"];
        _after();
    }

    function cooperativeClose(uint256 idx, uint256 amountSeed) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok || c.payee == payees[2]) return; // a contract cannot sign a CloseConsent
        uint256 amount = _amountFor(c, amountSeed);
        uint256 claimedBefore = pc.getChannel(c.id).claimed;
        (uint256 pb, uint256 qb) = (_value(c.payee, c.token), _value(payers[c.payerIdx], c.token));
        pc.cooperativeClose(c.id, amount, _voucher(c, amount), _consent(c, amount));
        _closeBooks(c, pb, qb, claimedBefore);
        ++done["cooperativeClose"];
        _after();
    }

    function startClose(uint256 idx) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        vm.prank(payers[c.payerIdx]);
        pc.startClose(c.id);
        ++done["startClose"];
        _after();
    }

    function warp(uint256 secondsSeed) external {
        vm.warp(block.timestamp + (secondsSeed % 2 days));
        _after();
    }

    function settle(uint256 idx) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 claimedBefore = pc.getChannel(c.id).claimed;
        (uint256 pb, uint256 qb) = (_value(c.payee, c.token), _value(payers[c.payerIdx], c.token));
        pc.settle(c.id);
        _closeBooks(c, pb, qb, claimedBefore);
        ++done["settle"];
        _after();
    }

    function withdraw(uint256 accountSeed, bool token) external {
        address account = accountSeed % 2 == 0 ? payees[2] : payers[accountSeed % 3];
        address t = token ? address(usd) : address(0);
        vm.prank(account);
        pc.withdraw(t, address(0x5151)); // to a sink: moves value out of the books
        ++done["withdraw"];
        _after();
    }

    /// Tries to reopen a closed channel's id; succeeding would be a bug.
    function reopen(uint256 idx) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok || pc.getChannel(c.id).status != PaymentChannels.Status.Closed) return;
        vm.prank(payers[c.payerIdx]);
        try pc.open{value: c.token == address(0) ? 1 : 0}(c.payee, c.token, 1, 1 days, c.salt) returns (bytes32) {
            reopened = true;
        } catch {}
        ++done["reopen"];
        _after();
    }

    /// Tries vouchers signed for another chain id, another contract and another channel of the
    /// same payer; any of them paying would be a bug.
    function foreignVoucher(uint256 idx, uint256 otherIdx, uint256 amountSeed, uint8 kind) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = _amountFor(c, amountSeed);
        bytes memory v;
        kind %= 3;
        if (kind == 0) {
            v = _sign(c.payerIdx, Sig.VOUCHER, c.id, amount, block.chainid + 1 + (amountSeed % 1000), address(pc));
        } else if (kind == 1) {
            address vc = address(uint160(amountSeed));
            if (vc == address(pc)) return; // the fuzzer's dictionary knows the real address
            v = _sign(c.payerIdx, Sig.VOUCHER, c.id, amount, block.chainid, vc);
        } else {
            Ch memory o = chans[otherIdx % chans.length];
            if (o.id == c.id) return;
            v = _sign(c.payerIdx, Sig.VOUCHER, o.id, amount, block.chainid, address(pc));
        }
        try pc.claim(c.id, amount, v) {
            foreignVoucherPaid = true;
        } catch {}
        ++done["foreignVoucher"];
        _after();
    }
}

/// @notice Invariants over random mixes of opens, top-ups, claims, claimMany, all three closes,
/// startClose, warps, settles and withdrawals (see Handler).
contract PaymentChannelsInvariantTest {
    Handler internal handler;

    function setUp() public {
        handler = new Handler();
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory targets) {
        bytes4[] memory s = new bytes4[](13);
        s[0] = Handler.open.selector;
        s[1] = Handler.open.selector; // weighted: opens feed everything else
        s[2] = Handler.topUp.selector;
        s[3] = Handler.claim.selector;
        s[4] = Handler.claimMany.selector;
        s[5] = Handler.closeByPayee.selector;
        s[6] = Handler.cooperativeClose.selector;
        s[7] = Handler.startClose.selector;
        s[8] = Handler.warp.selector;
        s[9] = Handler.settle.selector;
        s[10] = Handler.withdraw.selector;
        s[11] = Handler.reopen.selector;
        s[12] = Handler.foreignVoucher.selector;
        targets = new FuzzSelector[](1);
        targets[0] = FuzzSelector(address(handler), s);
    }

    /// The contract holds exactly the live channels' unclaimed deposits plus deferred payouts.
    function invariant_solvency() public view {
        PaymentChannels pc = handler.pc();
        address usd = address(handler.usd());
        uint256 eth;
        uint256 tok;
        uint256 n = handler.channelCount();
        for (uint256 i; i < n; ++i) {
            (bytes32 id, address token) = handler.channelAt(i);
            PaymentChannels.Channel memory ch = pc.getChannel(id);
            if (ch.status == PaymentChannels.Status.Closed) continue;
            if (token == address(0)) eth += ch.deposit - ch.claimed;
            else tok += ch.deposit - ch.claimed;
        }
        address[6] memory acc = handler.accounts();
        for (uint256 i; i < acc.length; ++i) {
            eth += pc.owed(acc[i], address(0));
            tok += pc.owed(acc[i], usd);
        }
        require(address(pc).balance == eth, "ETH balance != live deposits - claimed + owed");
        require(handler.usd().balanceOf(address(pc)) == tok, "token balance != live deposits - claimed + owed");
    }

    function invariant_payeeNeverReceivesMoreThanDeposit() public view {
        require(!handler.payeeOverpaid(), "a payee received more than its channel's deposits");
        require(!handler.closeNotConserving(), "a close did not split the deposit exactly");
    }

    function invariant_claimedNeverDecreases() public view {
        require(!handler.claimedDecreased(), "claimed decreased");
    }

    function invariant_closedIdNeverReopens() public view {
        require(!handler.reopened(), "a closed channel id was reopened");
    }

    function invariant_foreignVoucherNeverPays() public view {
        require(!handler.foreignVoucherPaid(), "a voucher for another chain/contract/channel paid");
    }
}
