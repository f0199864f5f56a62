// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {Base} from "./Base.t.sol";
import {PaymentChannels} from "../PaymentChannels.sol";
import {Mood, MoodyToken, MoodyReceiver} from "./mocks/PayoutAttackers.sol";

/// @notice PROTOCOL.md v2 change 7: a payout whose transfer reverts or runs out of PAYOUT_GAS is
/// deferred to `owed` and never fails the operation; a caller that starves a payout of gas gets
/// `InsufficientGasForPayout`; `withdraw` pays deferred funds later.
contract HostilePayoutsTest is Base {
    enum Op {
        Claim,
        ClaimMany,
        CloseByPayee,
        CooperativeClose,
        Settle
    }

    MoodyToken internal mt;
    uint256 internal constant DEPOSIT = 1000;
    uint256 internal constant PAID = 300; // what each operation pays the payee
    uint256 internal constant BOMB = 180_000; // bytes: nearly the whole budget in memory expansion

    function setUp() public override {
        super.setUp();
        mt = new MoodyToken();
        mt.mint(payer, 1e30);
        vm.prank(payer);
        mt.approve(address(pc), type(uint256).max);
    }

    function _fails(Mood m) internal pure returns (bool) {
        return m == Mood.Revert || m == Mood.BurnGas || m == Mood.RevertBomb || m == Mood.ReturnFalse
            || m == Mood.ReturnGarbage;
    }

    /// @dev Runs `op` on channel `id` and returns the gas of the operation's call alone (vouchers
    /// and consents are signed before the measurement). Every op but settle pays the payee PAID;
    /// every op but the claims refunds the payer the rest.
    function _run(Op op, bytes32 id, address payeeAccount) internal returns (uint256 used) {
        bytes memory v = _voucher(id, PAID);
        bytes memory consent = _consent(id, PAID);
        uint64 deadline = _deadline();
        PaymentChannels.Claim[] memory cs = new PaymentChannels.Claim[](1);
        cs[0] = PaymentChannels.Claim(id, PAID, v);
        if (op == Op.Settle) vm.warp(block.timestamp + CP);
        bool viaContract = payeeAccount.code.length != 0;
        if (op == Op.CloseByPayee && !viaContract) vm.prank(payeeAccount);
        uint256 g = gasleft();
        if (op == Op.Claim) {
            pc.claim(id, PAID, v);
        } else if (op == Op.ClaimMany) {
            pc.claimMany(cs);
        } else if (op == Op.CloseByPayee) {
            if (viaContract) {
                MoodyReceiver(payable(payeeAccount)).exec(address(pc), 0, abi.encodeCall(PaymentChannels.closeByPayee, (id, PAID, v)));
            } else {
                pc.closeByPayee(id, PAID, v);
            }
        } else if (op == Op.CooperativeClose) {
            pc.cooperativeClose(id, PAID, deadline, v, consent);
        } else {
            pc.settle(id);
        }
        used = g - gasleft();
    }

    function _startCloseIfSettling(Op op, bytes32 id, address payerAccount) internal {
        if (op != Op.Settle) return;
        if (payerAccount.code.length != 0) {
            MoodyReceiver(payable(payerAccount)).exec(address(pc), 0, abi.encodeCall(PaymentChannels.startClose, (id)));
        } else {
            vm.prank(payerAccount);
            pc.startClose(id);
        }
    }

    function _payeeShare(Op op) internal pure returns (uint256) {
        return op == Op.Settle ? 0 : PAID;
    }

    function _payerShare(Op op) internal pure returns (uint256) {
        return op == Op.Claim || op == Op.ClaimMany ? 0 : op == Op.Settle ? DEPOSIT : DEPOSIT - PAID;
    }

    // ---------------------------------------------------------------- a hostile token

    /// Every operation with every token mood: a failing transfer is deferred to `owed` for both
    /// parties and the operation succeeds; a transfer that succeeds (true, nothing, true + a
    /// return bomb) pays directly. The books count a deferral as paid.
    function test_hostileToken_neverBlocksAnyOperation() public {
        mt.configure(BOMB, 0);
        Mood[8] memory moods = [
            Mood.Honest, Mood.Revert, Mood.BurnGas, Mood.RevertBomb, Mood.ReturnBomb, Mood.ReturnFalse,
            Mood.ReturnNothing, Mood.ReturnGarbage
        ];
        uint256 payeeOwed;
        uint256 payerOwed;
        for (uint256 o; o <= uint256(Op.Settle); ++o) {
            Op op = Op(o);
            for (uint256 i; i < moods.length; ++i) {
                mt.setMood(Mood.Honest);
                vm.prank(payer);
                bytes32 id = pc.open(payee, address(mt), DEPOSIT, CP, _salt(), NO_SIGNER);
                _startCloseIfSettling(op, id, payer);
                mt.setMood(moods[i]);
                (uint256 payeeBal, uint256 payerBal) = (mt.balanceOf(payee), mt.balanceOf(payer));
                bool fails = _fails(moods[i]);
                if (fails && _payeeShare(op) != 0) {
                    vm.expectEmit(true, true, true, true, address(pc));
                    emit PaymentChannels.PaymentDeferred(payee, address(mt), _payeeShare(op));
                }
                if (fails && _payerShare(op) != 0) {
                    vm.expectEmit(true, true, true, true, address(pc));
                    emit PaymentChannels.PaymentDeferred(payer, address(mt), _payerShare(op));
                }
                _run(op, id, payee);
                if (fails) {
                    (payeeOwed, payerOwed) = (payeeOwed + _payeeShare(op), payerOwed + _payerShare(op));
                    _assertEq(mt.balanceOf(payee), payeeBal, "payee not paid directly");
                    _assertEq(mt.balanceOf(payer), payerBal, "payer not paid directly");
                } else {
                    _assertEq(mt.balanceOf(payee) - payeeBal, _payeeShare(op), "payee paid");
                    _assertEq(mt.balanceOf(payer) - payerBal, _payerShare(op), "payer refunded");
                }
                _assertEq(pc.owed(payee, address(mt)), payeeOwed, "payee owed");
                _assertEq(pc.owed(payer, address(mt)), payerOwed, "payer owed");
                if (op == Op.Claim || op == Op.ClaimMany) _assertEq(pc.getChannel(id).claimed, PAID, "deferred counts as paid");
                else _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Closed, "closed");
            }
        }
        // the token behaves again: both parties pull what they are owed
        mt.setMood(Mood.Honest);
        _withdrawAll(payee, address(mt), payeeOwed);
        _withdrawAll(payer, address(mt), payerOwed);
        // left: the unclaimed rest of the channels that were only claimed (2 ops x 8 moods)
        _assertEq(mt.balanceOf(address(pc)), 2 * 8 * (DEPOSIT - PAID), "contract holds exactly the live remainders");
    }

    function _withdrawAll(address account, address token, uint256 expected) internal {
        address sink = address(uint160(uint256(keccak256(abi.encode(account, "sink")))));
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.Withdrawn(account, token, sink, expected);
        vm.prank(account);
        pc.withdraw(token, sink);
        _assertEq(token == address(0) ? sink.balance : MoodyToken(token).balanceOf(sink), expected, "withdrawn");
        _assertEq(pc.owed(account, token), 0, "owed cleared");
    }

    // ---------------------------------------------------------------- hostile ETH accounts

    /// An ETH payee contract that reverts, burns all gas or answers with a revert bomb: claim,
    /// claimMany and closeByPayee succeed and defer its share; the payer's refund is unaffected.
    function test_hostileEthPayee_neverBlocks() public {
        MoodyReceiver r = new MoodyReceiver();
        r.configure(BOMB, 0);
        Mood[5] memory moods = [Mood.Honest, Mood.Revert, Mood.BurnGas, Mood.RevertBomb, Mood.ReturnBomb];
        uint256 owedSoFar;
        Op[3] memory ops = [Op.Claim, Op.ClaimMany, Op.CloseByPayee];
        for (uint256 o; o < ops.length; ++o) {
            for (uint256 i; i < moods.length; ++i) {
                vm.prank(payer);
                bytes32 id = pc.open{value: DEPOSIT}(address(r), address(0), DEPOSIT, CP, _salt(), NO_SIGNER);
                r.setMood(moods[i]);
                uint256 before = address(r).balance;
                uint256 payerBefore = payer.balance;
                bool fails = moods[i] == Mood.Revert || moods[i] == Mood.BurnGas || moods[i] == Mood.RevertBomb;
                _run(ops[o], id, address(r));
                if (fails) owedSoFar += PAID;
                _assertEq(address(r).balance - before, fails ? 0 : PAID, "payee direct");
                _assertEq(pc.owed(address(r), address(0)), owedSoFar, "payee owed");
                _assertEq(payer.balance - payerBefore, _payerShare(ops[o]), "payer refunded regardless");
            }
        }
        // the contract payee pulls its money to an address of its choice
        r.setMood(Mood.Revert);
        address sink = address(0x5151);
        r.exec(address(pc), 0, abi.encodeCall(PaymentChannels.withdraw, (address(0), sink)));
        _assertEq(sink.balance, owedSoFar, "withdrawn");
    }

    /// An ETH payer contract (it signs nothing itself: its voucher signer does) that rejects or
    /// burns its refund: settle, closeByPayee and cooperativeClose succeed, the payee is paid,
    /// the refund is deferred.
    function test_hostileEthPayer_neverBlocksCloses() public {
        MoodyReceiver r = new MoodyReceiver();
        vm.deal(address(r), 100 ether);
        r.configure(BOMB, 0);
        Mood[4] memory moods = [Mood.Honest, Mood.Revert, Mood.BurnGas, Mood.RevertBomb];
        Op[3] memory ops = [Op.CloseByPayee, Op.CooperativeClose, Op.Settle];
        uint256 owedSoFar;
        for (uint256 o; o < ops.length; ++o) {
            for (uint256 i; i < moods.length; ++i) {
                r.setMood(Mood.Honest);
                bytes32 id = abi.decode(
                    r.exec(address(pc), DEPOSIT, abi.encodeCall(PaymentChannels.open, (payee, address(0), DEPOSIT, CP, _salt(), signer))),
                    (bytes32)
                );
                _startCloseIfSettling(ops[o], id, address(r));
                r.setMood(moods[i]);
                uint256 payeeBefore = payee.balance;
                bytes32 cid = id;
                (bytes memory v, bytes memory consent, uint64 deadline) =
                    (_signerVoucher(cid, PAID), _consent(cid, PAID), _deadline());
                if (ops[o] == Op.Settle) vm.warp(block.timestamp + CP);
                if (ops[o] == Op.CloseByPayee) vm.prank(payee);
                uint256 g = gasleft();
                if (ops[o] == Op.CloseByPayee) pc.closeByPayee(cid, PAID, v);
                else if (ops[o] == Op.CooperativeClose) pc.cooperativeClose(cid, PAID, deadline, v, consent);
                else pc.settle(cid);
                g -= gasleft();
                bool fails = moods[i] != Mood.Honest;
                if (fails) owedSoFar += _payerShare(ops[o]);
                _assertEq(payee.balance - payeeBefore, _payeeShare(ops[o]), "payee paid");
                _assertEq(pc.owed(address(r), address(0)), owedSoFar, "payer owed");
                // a hostile payer costs the closer at most its budget plus the deferral
                _assertTrue(g < PAYOUT_BOUND, "bounded cost");
            }
        }
        r.setMood(Mood.Honest);
        uint256 before = address(r).balance;
        r.exec(address(pc), 0, abi.encodeCall(PaymentChannels.withdraw, (address(0), address(r))));
        _assertEq(address(r).balance - before, owedSoFar, "payer pulled its refunds");
    }

    // what one operation with one hostile payout may cost at most: the budget, a fresh `owed` slot,
    // and the operation itself (two ecrecovers, storage, events)
    uint256 internal constant PAYOUT_BOUND = 100_000 + 2_300 + 22_100 + 60_000;

    /// Return data is never copied: a revert bomb or a return bomb costs the caller no more than a
    /// token that burns its whole budget (each round pays a fresh payee, so every round makes the
    /// same storage transitions; the return bomb's payout even succeeds and writes no `owed`).
    function test_bombsCostNoMoreThanBurningTheBudget() public {
        // 120 kB: the return bomb's own transfer (two balance writes, one to a fresh slot) and
        // its memory still fit the budget, and copying it would cost the caller ~39k
        mt.configure(120_000, 0);
        uint256[3] memory used;
        Mood[3] memory moods = [Mood.BurnGas, Mood.RevertBomb, Mood.ReturnBomb];
        for (uint256 i; i < 3; ++i) {
            address to = vm.addr(0xF00 + i);
            vm.prank(payer);
            bytes32 id = pc.open(to, address(mt), DEPOSIT, CP, _salt(), NO_SIGNER);
            mt.setMood(moods[i]);
            used[i] = _run(Op.Claim, id, to);
        }
        _assertEq(pc.owed(vm.addr(0xF00), address(mt)) + pc.owed(vm.addr(0xF01), address(mt)), 2 * PAID, "both deferred");
        _assertEq(mt.balanceOf(vm.addr(0xF02)), PAID, "the return bomb's transfer went through");
        _assertTrue(used[1] <= used[0], "revert bomb <= burn");
        _assertTrue(used[2] <= used[0], "return bomb <= burn");
        _assertTrue(used[0] < PAYOUT_BOUND, "burn bounded");
    }

    // ---------------------------------------------------------------- gas starvation (63/64)

    enum Outcome {
        OutOfGas,
        Starved,
        Succeeded,
        OtherRevert
    }

    function _claimWithGas(bytes32 id, bytes memory v, uint256 gasLimit) internal returns (Outcome) {
        (bool ok, bytes memory ret) = address(pc).call{gas: gasLimit}(abi.encodeCall(PaymentChannels.claim, (id, PAID, v)));
        if (ok) return Outcome.Succeeded;
        if (ret.length == 0) return Outcome.OutOfGas;
        if (bytes4(ret) == PaymentChannels.InsufficientGasForPayout.selector) return Outcome.Starved;
        return Outcome.OtherRevert;
    }

    /// The last gas limit at which a claim whose payout burns everything still reverts
    /// `InsufficientGasForPayout` (below it the payout got less than PAYOUT_GAS).
    /// Every probe below reverts (starved, or out of gas writing `owed` just above the boundary),
    /// so the channel's state is the same for each; only a limit far above would succeed.
    function _lastStarvedLimit(bytes32 id, bytes memory v) internal returns (uint256 lo) {
        lo = 100_000; // the whole call has less than the payout's budget: certainly starved
        _assertTrue(_claimWithGas(id, v, lo) == Outcome.Starved, "100k is starved");
        // step up: an unstarved payout that burns its budget leaves ~1.6k, far too little for the
        // deferral's fresh `owed` slot (22.1k), so the first unstarved limits run out of gas
        uint256 hi = lo;
        Outcome o;
        do {
            hi += 5_000;
            o = _claimWithGas(id, v, hi);
        } while (o == Outcome.Starved);
        _assertTrue(o == Outcome.OutOfGas, "just above: the payout had its budget, the deferral ran out");
        while (hi - lo > 1) {
            uint256 mid = (lo + hi) / 2;
            if (_claimWithGas(id, v, mid) == Outcome.Starved) lo = mid;
            else hi = mid;
        }
        _assertEq(pc.getChannel(id).claimed, 1, "no probe changed the channel");
    }

    /// The 63/64 boundary, to the gas unit, for an ERC-20 payout: below it a payout that needs its
    /// whole budget would be starved and the claim reverts `InsufficientGasForPayout` (never a
    /// deferral); from one unit above it, the same honest payout gets its whole budget and pays.
    function test_starvedTokenPayoutReverts_boundaryToTheUnit() public {
        MoodyToken picky = new MoodyToken();
        picky.mint(payer, 1e30);
        vm.prank(payer);
        picky.approve(address(pc), type(uint256).max);
        vm.prank(payer);
        bytes32 pickyId = pc.open(payee, address(picky), DEPOSIT, CP, _salt(), NO_SIGNER);
        vm.prank(payer);
        bytes32 burnId = pc.open(payee, address(mt), DEPOSIT, CP, _salt(), NO_SIGNER);
        // a first claim on each, so both later claims make the same storage transitions; the
        // picky token's records the gas an unstarved transfer has at its first statement
        picky.setMood(Mood.Probe);
        pc.claim(pickyId, 1, _voucher(pickyId, 1));
        pc.claim(burnId, 1, _voucher(burnId, 1));
        uint256 fullBudgetAtEntry = picky.lastEntryGas();
        _assertTrue(fullBudgetAtEntry > 99_000 && fullBudgetAtEntry < 100_000, "entry gas of a full budget");
        picky.configure(0, fullBudgetAtEntry);
        picky.setMood(Mood.NeedsFullBudget);
        mt.setMood(Mood.BurnGas);
        bytes memory burnV = _voucher(burnId, PAID);
        bytes memory pickyV = _voucher(pickyId, PAID);
        uint256 last = _lastStarvedLimit(burnId, burnV);
        for (uint256 g = last - 40; g < last; ++g) {
            _assertEq(uint256(_claimWithGas(pickyId, pickyV, g)), uint256(Outcome.Starved), string.concat("starved below the boundary (", _str(last - g), " under it): reverts"));
        }
        _assertEq(pc.owed(payee, address(picky)), 0, "never deferred");
        _assertTrue(_claimWithGas(pickyId, pickyV, last + 1) == Outcome.Succeeded, "one unit above: full budget");
        _assertEq(picky.balanceOf(payee), PAID, "paid directly (cumulative PAID), not deferred");
        _assertEq(pc.owed(payee, address(picky)), 0, "nothing owed");
    }

    /// The same boundary for an ETH payout (value transfer: the callee also gets the 2,300 stipend).
    function test_starvedEthPayoutReverts_boundaryToTheUnit() public {
        MoodyReceiver picky = new MoodyReceiver();
        MoodyReceiver burner = new MoodyReceiver();
        vm.prank(payer);
        bytes32 pickyId = pc.open{value: DEPOSIT}(address(picky), address(0), DEPOSIT, CP, _salt(), NO_SIGNER);
        vm.prank(payer);
        bytes32 burnId = pc.open{value: DEPOSIT}(address(burner), address(0), DEPOSIT, CP, _salt(), NO_SIGNER);
        picky.setMood(Mood.Probe);
        pc.claim(pickyId, 1, _voucher(pickyId, 1));
        pc.claim(burnId, 1, _voucher(burnId, 1));
        uint256 fullBudgetAtEntry = picky.lastEntryGas();
        _assertTrue(fullBudgetAtEntry > 100_000 && fullBudgetAtEntry < 102_300, "budget + stipend at entry");
        picky.configure(0, fullBudgetAtEntry);
        picky.setMood(Mood.NeedsFullBudget);
        burner.setMood(Mood.BurnGas);
        bytes memory burnV = _voucher(burnId, PAID);
        bytes memory pickyV = _voucher(pickyId, PAID);
        uint256 last = _lastStarvedLimit(burnId, burnV);
        for (uint256 g = last - 40; g < last; ++g) {
            _assertEq(uint256(_claimWithGas(pickyId, pickyV, g)), uint256(Outcome.Starved), string.concat("starved below the boundary (", _str(last - g), " under it): reverts"));
        }
        _assertTrue(_claimWithGas(pickyId, pickyV, last + 1) == Outcome.Succeeded, "one unit above: full budget");
        _assertEq(address(picky).balance, PAID, "paid directly (cumulative PAID)");
        _assertEq(pc.owed(address(picky), address(0)), 0, "never deferred");
    }

    /// Above the boundary a burning payout is deferred, with gas to spare it is always deferred.
    function test_burningPayoutDeferredWithEnoughGas() public {
        mt.setMood(Mood.BurnGas);
        vm.prank(payer);
        bytes32 id = pc.open(payee, address(mt), DEPOSIT, CP, _salt(), NO_SIGNER);
        bytes memory v = _voucher(id, PAID);
        _assertTrue(_claimWithGas(id, v, 250_000) == Outcome.Succeeded, "deferred at 250k");
        _assertEq(pc.owed(payee, address(mt)), PAID, "owed");
        _assertEq(pc.getChannel(id).claimed, PAID, "counts as paid");
    }

    // ---------------------------------------------------------------- withdraw

    function test_withdraw_revert_nothingOwed() public {
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToWithdraw.selector, payee, address(mt)));
        vm.prank(payee);
        pc.withdraw(address(mt), payee);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToWithdraw.selector, payee, address(0)));
        vm.prank(payee);
        pc.withdraw(address(0), payee);
    }

    /// Only the account that is owed can withdraw it: a stranger naming itself as `to` gets nothing.
    function test_withdraw_onlyTheOwedAccount() public {
        mt.setMood(Mood.Revert);
        vm.prank(payer);
        bytes32 id = pc.open(payee, address(mt), DEPOSIT, CP, _salt(), NO_SIGNER);
        pc.claim(id, PAID, _voucher(id, PAID));
        mt.setMood(Mood.Honest);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToWithdraw.selector, other, address(mt)));
        pc.withdraw(address(mt), other);
        _assertEq(pc.owed(payee, address(mt)), PAID, "still owed to the payee");
    }

    /// A token still failing at withdraw time: withdraw reverts and the debt stays.
    function test_withdraw_failingTokenKeepsDebt() public {
        mt.setMood(Mood.ReturnFalse);
        vm.prank(payer);
        bytes32 id = pc.open(payee, address(mt), DEPOSIT, CP, _salt(), NO_SIGNER);
        pc.claim(id, PAID, _voucher(id, PAID));
        vm.prank(payee);
        vm.expectPartialRevert(bytes4(keccak256("SafeERC20FailedOperation(address)")));
        pc.withdraw(address(mt), payee);
        _assertEq(pc.owed(payee, address(mt)), PAID, "debt kept");
    }
}
