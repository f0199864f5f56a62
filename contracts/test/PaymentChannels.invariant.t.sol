// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {Sig} from "./Base.t.sol";
import {PaymentChannels} from "../PaymentChannels.sol";
import {TestStablecoin} from "./mocks/Tokens.sol";
import {Mood, MoodyToken, MoodyReceiver} from "./mocks/PayoutAttackers.sol";

/// @notice Drives PaymentChannels with random mixes of every operation and keeps ghost books:
/// what each payee received from each channel (balance + deferred), what was deposited, and
/// flags for the safety properties checked by the invariant test below. Channels are in ETH, an
/// honest stablecoin, or a token whose payouts misbehave at random (MoodyToken); some payers and
/// payees are contracts whose ETH receipt misbehaves at random (MoodyReceiver); about half the
/// channels have a voucher signer, and vouchers come from the payer or the signer.
contract Handler {
    struct Ch {
        bytes32 id;
        uint8 payerIdx;
        uint8 payeeIdx;
        address token;
        bytes32 salt;
        uint256 signerKey; // 0: no voucher signer
    }

    uint256 internal constant CONTRACT_PAYER = 3;
    uint256 internal constant CONTRACT_PAYEE = 2;

    PaymentChannels public immutable pc;
    TestStablecoin public immutable usd;
    MoodyToken public immutable mt;
    uint256[3] internal payerKeys = [uint256(0xA1), 0xA2, 0xA3];
    uint256[3] internal payeeKeys = [uint256(0xB1), 0xB2, 0]; // payees[2] is a contract
    uint256[4] internal signerKeys = [uint256(0x51), 0x52, 0x53, 0x54];
    address[4] public payers; // payers[3] is a contract: it signs nothing, its voucher signer does
    address[3] public payees;
    address public constant SINK = address(0x5151);
    Ch[] internal chans;

    mapping(bytes32 => uint256) public deposited;
    mapping(bytes32 => uint256) public payeeReceived;
    mapping(bytes32 => uint256) public lastClaimed;
    bool public claimedDecreased;
    bool public payeeOverpaid;
    bool public closeNotConserving;
    bool public reopened;
    bool public foreignVoucherPaid;
    bool public expiredConsentClosed;
    bool public deferralNotCountedAsPaid;
    uint256 public calls;
    /// @notice Successful actions by kind, to see that the mix reaches every path.
    mapping(bytes32 kind => uint256) public done;

    constructor() {
        vm.deal(address(this), type(uint128).max);
        pc = new PaymentChannels();
        usd = new TestStablecoin();
        mt = new MoodyToken();
        for (uint256 i; i < 3; ++i) payers[i] = vm.addr(payerKeys[i]);
        payers[CONTRACT_PAYER] = address(new MoodyReceiver());
        for (uint256 i; i < 4; ++i) {
            vm.deal(payers[i], type(uint128).max);
            usd.mint(payers[i], type(uint128).max);
            mt.mint(payers[i], type(uint128).max);
            _as(i, address(usd), abi.encodeWithSignature("approve(address,uint256)", address(pc), type(uint256).max));
            _as(i, address(mt), abi.encodeWithSignature("approve(address,uint256)", address(pc), type(uint256).max));
        }
        payees[0] = vm.addr(payeeKeys[0]);
        payees[1] = vm.addr(payeeKeys[1]);
        payees[CONTRACT_PAYEE] = address(new MoodyReceiver());
    }

    // ---------------------------------------------------------------- views for the invariants

    function channelCount() external view returns (uint256) {
        return chans.length;
    }

    function channelAt(uint256 i) external view returns (bytes32 id, address token) {
        return (chans[i].id, chans[i].token);
    }

    function accounts() external view returns (address[7] memory all) {
        for (uint256 i; i < 4; ++i) all[i] = payers[i];
        for (uint256 i; i < 3; ++i) all[4 + i] = payees[i];
    }

    // ---------------------------------------------------------------- helpers

    /// @dev Calls `target` as payer `idx` (an EOA through prank, the contract payer through exec).
    function _as(uint256 idx, address target, bytes memory data) internal returns (bytes memory ret) {
        return _asAccount(payers[idx], target, 0, data);
    }

    function _asAccount(address account, address target, uint256 value, bytes memory data)
        internal
        returns (bytes memory ret)
    {
        bool ok;
        if (account.code.length != 0) {
            (ok, ret) = account.call(abi.encodeCall(MoodyReceiver.exec, (target, value, data)));
            if (ok) ret = abi.decode(ret, (bytes));
        } else {
            vm.prank(account);
            (ok, ret) = target.call{value: value}(data);
        }
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }

    function _pick(uint256 seed) internal view returns (Ch memory c, bool ok) {
        if (chans.length == 0) return (c, false);
        return (chans[seed % chans.length], true);
    }

    function _value(address who, address token) internal view returns (uint256) {
        uint256 held = token == address(0) ? who.balance : token == address(usd) ? usd.balanceOf(who) : mt.balanceOf(who);
        return held + pc.owed(who, token);
    }

    function _voucherBy(uint256 key, bytes32 id, uint256 amount) internal view returns (bytes memory) {
        return Sig.sign(key, Sig.digest(Sig.VOUCHER, id, amount, block.chainid, address(pc)));
    }

    /// @dev A valid voucher: from the voucher signer when the channel has one and `bySigner`, or
    /// when the payer is a contract (it cannot sign); otherwise from the payer.
    function _voucher(Ch memory c, uint256 amount, bool bySigner) internal view returns (bytes memory) {
        bool signer = c.signerKey != 0 && (bySigner || c.payerIdx == CONTRACT_PAYER);
        return _voucherBy(signer ? c.signerKey : payerKeys[c.payerIdx], c.id, amount);
    }

    function _consent(Ch memory c, uint256 amount, uint64 deadline) internal view returns (bytes memory) {
        return Sig.sign(payeeKeys[c.payeeIdx], Sig.consentDigest(c.id, amount, deadline, block.chainid, address(pc)));
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

    function open(uint256 payerSeed, uint256 payeeSeed, uint256 amountSeed, uint32 cpSeed, uint8 tokenSeed, uint8 signerSeed)
        external
    {
        Ch memory c;
        c.payerIdx = uint8(payerSeed % 4);
        c.payeeIdx = uint8(payeeSeed % 3);
        tokenSeed %= 3;
        c.token = tokenSeed == 0 ? address(0) : tokenSeed == 1 ? address(usd) : address(mt);
        c.salt = bytes32(chans.length);
        // a contract payer always has a voucher signer; others about half the time, drawn from a
        // small pool so that keys are shared across channels and payers
        if (c.payerIdx == CONTRACT_PAYER || signerSeed % 2 == 1) c.signerKey = signerKeys[(signerSeed / 2) % 4];
        uint256 amount = 1 + (amountSeed % 1e24);
        uint64 cp = uint64(1 + (cpSeed % 3 days));
        uint256 value = c.token == address(0) ? amount : 0;
        bytes memory data = abi.encodeCall(
            PaymentChannels.open,
            (payees[c.payeeIdx], c.token, amount, cp, c.salt, c.signerKey == 0 ? address(0) : vm.addr(c.signerKey))
        );
        c.id = abi.decode(_asAccount(payers[c.payerIdx], address(pc), value, data), (bytes32));
        chans.push(c);
        deposited[c.id] = amount;
        ++done["open"];
        _after();
    }

    function topUp(uint256 idx, uint256 amountSeed) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = 1 + (amountSeed % 1e22);
        _asAccount(payers[c.payerIdx], address(pc), c.token == address(0) ? amount : 0, abi.encodeCall(PaymentChannels.topUp, (c.id, amount)));
        deposited[c.id] += amount;
        ++done["topUp"];
        _after();
    }

    function claim(uint256 idx, uint256 amountSeed, bool bySigner) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = _amountFor(c, amountSeed);
        uint256 before = _value(payees[c.payeeIdx], c.token);
        uint256 claimedBefore = pc.getChannel(c.id).claimed;
        pc.claim(c.id, amount, _voucher(c, amount, bySigner));
        uint256 got = _value(payees[c.payeeIdx], c.token) - before;
        payeeReceived[c.id] += got;
        if (got != pc.getChannel(c.id).claimed - claimedBefore) deferralNotCountedAsPaid = true;
        ++done["claim"];
        _after();
    }

    function claimMany(uint256 seed, uint8 countSeed) external {
        if (chans.length == 0) return;
        uint256 n = 1 + (countSeed % 5);
        PaymentChannels.Claim[] memory cs = new PaymentChannels.Claim[](n);
        Ch[] memory picked = new Ch[](n);
        uint256[] memory claimedBefore = new uint256[](n);
        uint256[] memory valueBefore = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            Ch memory c = chans[uint256(keccak256(abi.encode(seed, i))) % chans.length];
            uint256 amount = _amountFor(c, uint256(keccak256(abi.encode(seed, i, "amount"))));
            cs[i] = PaymentChannels.Claim(c.id, amount, _voucher(c, amount, (seed >> i) & 1 == 1));
            picked[i] = c;
            claimedBefore[i] = pc.getChannel(c.id).claimed;
            valueBefore[i] = _value(payees[c.payeeIdx], c.token);
        }
        pc.claimMany(cs);
        // attribute each channel's claimed increase once (duplicates in the batch included), and
        // check per (payee, token) that what it received equals what the channels booked
        for (uint256 i; i < n; ++i) {
            bool seenChannel;
            bool seenPair;
            for (uint256 j; j < i; ++j) {
                if (cs[j].channelId == cs[i].channelId) seenChannel = true;
                if (picked[j].payeeIdx == picked[i].payeeIdx && picked[j].token == picked[i].token) seenPair = true;
            }
            if (!seenChannel) payeeReceived[cs[i].channelId] += pc.getChannel(cs[i].channelId).claimed - claimedBefore[i];
            if (seenPair) continue;
            uint256 booked;
            for (uint256 j = i; j < n; ++j) {
                if (picked[j].payeeIdx != picked[i].payeeIdx || picked[j].token != picked[i].token) continue;
                bool dup;
                for (uint256 k = i; k < j; ++k) if (cs[k].channelId == cs[j].channelId) dup = true;
                if (!dup) booked += pc.getChannel(cs[j].channelId).claimed - claimedBefore[j];
            }
            if (_value(payees[picked[i].payeeIdx], picked[i].token) - valueBefore[i] != booked) {
                deferralNotCountedAsPaid = true;
            }
        }
        ++done["claimMany"];
        _after();
    }

    function _closeBooks(Ch memory c, uint256 payeeBefore, uint256 payerBefore, uint256 claimedBefore) internal {
        uint256 toPayee = _value(payees[c.payeeIdx], c.token) - payeeBefore;
        uint256 toPayer = _value(payers[c.payerIdx], c.token) - payerBefore;
        payeeReceived[c.id] += toPayee;
        if (claimedBefore + toPayee + toPayer != deposited[c.id]) closeNotConserving = true;
    }

    function closeByPayee(uint256 idx, uint256 amountSeed, bool bySigner) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = _amountFor(c, amountSeed);
        bytes memory data = abi.encodeCall(PaymentChannels.closeByPayee, (c.id, amount, _voucher(c, amount, bySigner)));
        uint256 claimedBefore = pc.getChannel(c.id).claimed;
        (uint256 pb, uint256 qb) = (_value(payees[c.payeeIdx], c.token), _value(payers[c.payerIdx], c.token));
        _asAccount(payees[c.payeeIdx], address(pc), 0, data);
        _closeBooks(c, pb, qb, claimedBefore);
        ++done["closeByPayee"];
        _after();
    }

    function cooperativeClose(uint256 idx, uint256 amountSeed, uint32 deadlineSeed, bool bySigner) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok || c.payeeIdx == CONTRACT_PAYEE) return; // a contract cannot sign a CloseConsent
        uint256 amount = _amountFor(c, amountSeed);
        uint64 deadline = uint64(block.timestamp + (deadlineSeed % 2 hours)); // now is still valid
        uint256 claimedBefore = pc.getChannel(c.id).claimed;
        (uint256 pb, uint256 qb) = (_value(payees[c.payeeIdx], c.token), _value(payers[c.payerIdx], c.token));
        pc.cooperativeClose(c.id, amount, deadline, _voucher(c, amount, bySigner), _consent(c, amount, deadline));
        _closeBooks(c, pb, qb, claimedBefore);
        ++done["cooperativeClose"];
        _after();
    }

    /// A consent whose deadline has passed must never close; succeeding would be a bug.
    function cooperativeCloseExpired(uint256 idx, uint256 amountSeed, uint32 agoSeed) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok || c.payeeIdx == CONTRACT_PAYEE || block.timestamp < 2 hours) return;
        uint256 amount = _amountFor(c, amountSeed);
        uint64 deadline = uint64(block.timestamp - 1 - (agoSeed % 1 hours));
        try pc.cooperativeClose(c.id, amount, deadline, _voucher(c, amount, false), _consent(c, amount, deadline)) {
            expiredConsentClosed = true;
        } catch {}
        ++done["cooperativeCloseExpired"];
        _after();
    }

    function startClose(uint256 idx) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        _as(c.payerIdx, address(pc), abi.encodeCall(PaymentChannels.startClose, (c.id)));
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
        (uint256 pb, uint256 qb) = (_value(payees[c.payeeIdx], c.token), _value(payers[c.payerIdx], c.token));
        pc.settle(c.id);
        _closeBooks(c, pb, qb, claimedBefore);
        ++done["settle"];
        _after();
    }

    /// Payouts of the moody token and the contract accounts start or stop misbehaving.
    function setMoods(uint8 tokenMood, uint8 payerMood, uint8 payeeMood) external {
        // the moods whose bombs stay small: default bombSize
        Mood[6] memory pool = [Mood.Honest, Mood.Revert, Mood.BurnGas, Mood.RevertBomb, Mood.ReturnFalse, Mood.ReturnNothing];
        mt.setMood(tokenMood % 7 == 6 ? Mood.ReturnGarbage : pool[tokenMood % 6]);
        MoodyReceiver(payable(payers[CONTRACT_PAYER])).setMood(pool[payerMood % 4]);
        MoodyReceiver(payable(payees[CONTRACT_PAYEE])).setMood(pool[payeeMood % 4]);
        ++done["setMoods"];
        _after();
    }

    function withdraw(uint256 accountSeed, uint8 tokenSeed) external {
        address account = accountSeed % 2 == 0
            ? payees[(accountSeed / 2) % 3]
            : payers[(accountSeed / 2) % 4];
        tokenSeed %= 3;
        address t = tokenSeed == 0 ? address(0) : tokenSeed == 1 ? address(usd) : address(mt);
        // to a sink: moves value out of the books
        _asAccount(account, address(pc), 0, abi.encodeCall(PaymentChannels.withdraw, (t, SINK)));
        ++done["withdraw"];
        _after();
    }

    /// Tries to reopen a closed channel's id; succeeding would be a bug.
    function reopen(uint256 idx) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok || pc.getChannel(c.id).status != PaymentChannels.Status.Closed) return;
        bytes memory data = abi.encodeCall(PaymentChannels.open, (payees[c.payeeIdx], c.token, 1, 1 days, c.salt, address(0)));
        try this.asAccountExternal(payers[c.payerIdx], address(pc), c.token == address(0) ? 1 : 0, data) {
            reopened = true;
        } catch {}
        ++done["reopen"];
        _after();
    }

    /// @dev External entry to `_asAccount` so a revert can be caught with try/catch.
    function asAccountExternal(address account, address target, uint256 value, bytes calldata data) external {
        require(msg.sender == address(this), "self only");
        _asAccount(account, target, value, data);
    }

    /// Tries vouchers that must not pay: signed for another chain id, another contract, another
    /// channel of the same payer, by the voucher signer of ANOTHER channel, by the payee, or by a
    /// random key; any of them paying would be a bug.
    function foreignVoucher(uint256 idx, uint256 otherIdx, uint256 amountSeed, uint8 kind) external {
        (Ch memory c, bool ok) = _pick(idx);
        if (!ok) return;
        uint256 amount = _amountFor(c, amountSeed);
        uint256 key = c.signerKey != 0 && c.payerIdx == CONTRACT_PAYER ? c.signerKey : payerKeys[c.payerIdx % 3];
        bytes memory v;
        kind %= 6;
        if (kind == 0) {
            v = Sig.sign(key, Sig.digest(Sig.VOUCHER, c.id, amount, block.chainid + 1 + (amountSeed % 1000), address(pc)));
        } else if (kind == 1) {
            address vc = address(uint160(amountSeed));
            if (vc == address(pc)) return; // the fuzzer's dictionary knows the real address
            v = Sig.sign(key, Sig.digest(Sig.VOUCHER, c.id, amount, block.chainid, vc));
        } else if (kind == 2) {
            Ch memory o = chans[otherIdx % chans.length];
            if (o.id == c.id) return;
            v = _voucherBy(key, o.id, amount);
        } else if (kind == 3) {
            // the voucher signer of another channel that is not this channel's signer or payer
            Ch memory o = chans[otherIdx % chans.length];
            if (o.signerKey == 0 || o.signerKey == c.signerKey) return;
            v = _voucherBy(o.signerKey, c.id, amount);
        } else if (kind == 4) {
            if (c.payeeIdx == CONTRACT_PAYEE) return;
            v = _voucherBy(payeeKeys[c.payeeIdx], c.id, amount);
        } else {
            uint256 k = 1 + (uint256(keccak256(abi.encode(amountSeed, "key"))) % (Sig.N - 1));
            if (k == c.signerKey || (c.payerIdx < 3 && k == payerKeys[c.payerIdx])) return;
            v = _voucherBy(k, c.id, amount);
        }
        try pc.claim(c.id, amount, v) {
            foreignVoucherPaid = true;
        } catch {}
        ++done["foreignVoucher"];
        _after();
    }
}

/// @notice Invariants over random mixes of opens (ETH, stablecoin, misbehaving token; with and
/// without voucher signer; EOA and contract payers and payees), top-ups, claims, claimMany, all
/// three closes, expired consents, startClose, warps, settles, mood swings, withdrawals, reopen
/// attempts and foreign vouchers (see Handler).
contract PaymentChannelsInvariantTest {
    Handler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
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
        bytes4[] memory s = new bytes4[](16);
        s[0] = Handler.open.selector;
        s[1] = Handler.open.selector; // weighted: opens feed everything else
        s[2] = Handler.topUp.selector;
        s[3] = Handler.claim.selector;
        s[4] = Handler.claimMany.selector;
        s[5] = Handler.closeByPayee.selector;
        s[6] = Handler.cooperativeClose.selector;
        s[7] = Handler.cooperativeCloseExpired.selector;
        s[8] = Handler.startClose.selector;
        s[9] = Handler.warp.selector;
        s[10] = Handler.settle.selector;
        s[11] = Handler.setMoods.selector;
        s[12] = Handler.withdraw.selector;
        s[13] = Handler.reopen.selector;
        s[14] = Handler.foreignVoucher.selector;
        s[15] = Handler.claim.selector; // weighted: claims are the hot path
        targets = new FuzzSelector[](1);
        targets[0] = FuzzSelector(address(handler), s);
    }

    /// Solvency, per token and exact: the contract holds the live channels' unclaimed deposits
    /// plus every deferred payout (a deferral counts as paid, so it must still be held), no more
    /// and no less. (The protocol needs >=; equality also catches funds stuck in the contract.)
    function invariant_solvency() public view {
        PaymentChannels pc = handler.pc();
        address[3] memory tokens = [address(0), address(handler.usd()), address(handler.mt())];
        uint256[3] memory books;
        uint256 n = handler.channelCount();
        for (uint256 i; i < n; ++i) {
            (bytes32 id, address token) = handler.channelAt(i);
            PaymentChannels.Channel memory ch = pc.getChannel(id);
            if (ch.status == PaymentChannels.Status.Closed) continue;
            uint256 t = token == tokens[0] ? 0 : token == tokens[1] ? 1 : 2;
            books[t] += ch.deposit - ch.claimed;
        }
        address[7] memory acc = handler.accounts();
        for (uint256 t; t < 3; ++t) for (uint256 i; i < acc.length; ++i) books[t] += pc.owed(acc[i], tokens[t]);
        require(address(pc).balance == books[0], "ETH balance != live deposits - claimed + owed");
        require(handler.usd().balanceOf(address(pc)) == books[1], "stablecoin balance != live deposits - claimed + owed");
        require(handler.mt().balanceOf(address(pc)) == books[2], "moody token balance != live deposits - claimed + owed");
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
        require(!handler.foreignVoucherPaid(), "a voucher not signed by this channel's payer or signer paid");
    }

    function invariant_expiredConsentNeverCloses() public view {
        require(!handler.expiredConsentClosed(), "a cooperativeClose with an expired consent succeeded");
    }

    function invariant_deferredCountsAsPaid() public view {
        require(!handler.deferralNotCountedAsPaid(), "a payee's balance + owed did not grow by what was claimed");
    }
}
