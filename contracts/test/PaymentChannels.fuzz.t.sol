// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {Base, Sig} from "./Base.t.sol";
import {PaymentChannels} from "../PaymentChannels.sol";

/// @notice Property tests over amounts, vouchers and call orderings.
contract PaymentChannelsFuzzTest is Base {
    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + (x % (hi - lo + 1));
    }

    function _open(uint256 deposit, bool token) internal returns (bytes32) {
        return token ? _openUsd(deposit) : _openEth(deposit);
    }

    function _bal(address who, bool token) internal view returns (uint256) {
        return token ? usd.balanceOf(who) : who.balance;
    }

    /// claim pays min(voucher, deposit) - claimed, never more than the deposit in total.
    function testFuzz_claimSequence(uint96 depositSeed, uint256[4] memory cums, bool token) public {
        uint256 deposit = _bound(depositSeed, 1, 1e24);
        bytes32 id = _open(deposit, token);
        uint256 claimed;
        for (uint256 i; i < cums.length; ++i) {
            uint256 cum = _bound(cums[i], 0, deposit * 2);
            uint256 expected = cum < deposit ? cum : deposit;
            uint256 before = _bal(payee, token);
            if (expected <= claimed) {
                vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NothingToClaim.selector, id, cum, claimed));
                pc.claim(id, cum, _voucher(id, cum));
                continue;
            }
            pc.claim(id, cum, _voucher(id, cum));
            _assertEq(_bal(payee, token) - before, expected - claimed, "paid");
            claimed = expected;
            _assertEq(pc.getChannel(id).claimed, claimed, "claimed");
        }
        _assertTrue(_bal(payee, token) <= deposit, "never above deposit");
    }

    /// Every close splits the deposit exactly between payee and payer.
    function testFuzz_closesConserveDeposit(uint96 depositSeed, uint256 firstSeed, uint256 cumSeed, uint8 kind, bool token)
        public
    {
        uint256 deposit = _bound(depositSeed, 1, 1e24);
        bytes32 id = _open(deposit, token);
        uint256 first = _bound(firstSeed, 0, deposit);
        if (first != 0) pc.claim(id, first, _voucher(id, first));
        uint256 cum = _bound(cumSeed, 0, deposit * 2);
        uint256 payeeBefore = _bal(payee, token);
        uint256 payerBefore = _bal(payer, token);
        kind %= 3;
        if (kind == 0) {
            vm.prank(payee);
            pc.closeByPayee(id, cum, _voucher(id, cum));
        } else if (kind == 1) {
            pc.cooperativeClose(id, cum, _deadline(), _voucher(id, cum), _consent(id, cum));
        } else {
            vm.prank(payer);
            pc.startClose(id);
            vm.warp(block.timestamp + CP);
            pc.settle(id);
            cum = 0;
        }
        uint256 capped = cum < deposit ? cum : deposit;
        uint256 payeeTotal = capped > first ? capped : first;
        _assertEq(_bal(payee, token) - payeeBefore, payeeTotal - first, "payee share");
        _assertEq(_bal(payer, token) - payerBefore, deposit - payeeTotal, "payer refund");
        _assertEq(token ? usd.balanceOf(address(pc)) : address(pc).balance, 0, "nothing left");
        _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Closed, "closed");
    }

    /// A voucher signed for any other chain id, contract or channel never pays.
    function testFuzz_foreignVoucherNeverPays(uint256 chainId, address verifying, bytes32 otherId, uint256 amountSeed)
        public
    {
        bytes32 id = _openEth(1 ether);
        uint256 amount = _bound(amountSeed, 1, 2 ether);
        if (chainId != block.chainid) {
            bytes memory v = Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, id, amount, chainId, address(pc)));
            vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
            pc.claim(id, amount, v);
        }
        if (verifying != address(pc)) {
            bytes memory v = Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, id, amount, block.chainid, verifying));
            vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
            pc.claim(id, amount, v);
        }
        if (otherId != id) {
            bytes memory v = Sig.sign(PAYER_KEY, Sig.digest(Sig.VOUCHER, otherId, amount, block.chainid, address(pc)));
            vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
            pc.claim(id, amount, v);
        }
        _assertEq(payee.balance, 0, "nothing paid");
    }

    /// The malleable high-s twin of any valid voucher is rejected; the low-s original pays.
    function testFuzz_highSRejected(uint256 keySeed, uint256 amountSeed) public {
        uint256 key = _bound(keySeed, 1, Sig.N - 1);
        address p = vm.addr(key);
        vm.deal(p, 1 ether);
        vm.prank(p);
        bytes32 id = pc.open{value: 1 ether}(payee, address(0), 1 ether, CP, bytes32(0), NO_SIGNER);
        uint256 amount = _bound(amountSeed, 1, 1 ether);
        bytes32 h = Sig.digest(Sig.VOUCHER, id, amount, block.chainid, address(pc));
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.claim(id, amount, Sig.highS(key, h));
        pc.claim(id, amount, Sig.sign(key, h));
        _assertEq(payee.balance, amount, "low-s pays");
    }

    /// challengePeriod outside (0, 30 days] is rejected, inside accepted.
    function testFuzz_challengePeriodBound(uint64 cp) public {
        vm.prank(payer);
        if (cp == 0 || cp > 30 days) {
            vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidChallengePeriod.selector, cp, uint64(30 days)));
            pc.open{value: 1}(payee, address(0), 1, cp, bytes32(0), NO_SIGNER);
        } else {
            bytes32 id = pc.open{value: 1}(payee, address(0), 1, cp, bytes32(0), NO_SIGNER);
            _assertEq(pc.getChannel(id).challengePeriod, cp, "stored");
        }
    }

    /// A consent closes while block.timestamp <= deadline and never after it.
    function testFuzz_consentDeadline(uint64 deadlineSeed, uint32 elapsed, uint256 amountSeed) public {
        bytes32 id = _openUsd(1000);
        uint64 deadline = uint64(_bound(deadlineSeed, block.timestamp, block.timestamp + 30 days));
        uint256 amount = _bound(amountSeed, 1, 2000);
        bytes memory v = _voucher(id, amount);
        bytes memory c = _consentUntil(id, amount, deadline);
        vm.warp(block.timestamp + (elapsed % 31 days));
        if (block.timestamp > deadline) {
            vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ConsentExpired.selector, id, deadline, block.timestamp));
            pc.cooperativeClose(id, amount, deadline, v, c);
            _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Open, "still open");
        } else {
            pc.cooperativeClose(id, amount, deadline, v, c);
            _assertEq(usd.balanceOf(payee), amount < 1000 ? amount : 1000, "closed at the consented amount");
        }
    }

    /// Random call orderings on one channel with a voucher signer, vouchers from either key,
    /// checked step by step against a tiny model.
    function testFuzz_callOrderings(uint256 seed, uint96 depositSeed) public {
        uint256 deposit = _bound(depositSeed, 1, 1e21);
        bytes32 id = _openWithSigner(deposit, false);
        uint256 mDeposit = deposit;
        uint256 mClaimed;
        uint256 mStatus = 1; // 1 open, 2 closing, 3 closed
        uint256 mClosesAt;
        for (uint256 step; step < 12; ++step) {
            seed = uint256(keccak256(abi.encode(seed, step)));
            uint256 op = seed % 7;
            uint256 x = _bound(seed >> 8, 0, mDeposit + 10);
            bool live = mStatus == 1 || (mStatus == 2 && block.timestamp < mClosesAt);
            if (op == 0) {
                // topUp
                uint256 amt = _bound(seed >> 16, 1, 1e18);
                if (mStatus != 1) vm.expectRevert();
                pc.topUp{value: amt}(id, amt);
                if (mStatus == 1) mDeposit += amt;
            } else if (op == 1) {
                // claim
                uint256 pay = (x < mDeposit ? x : mDeposit);
                bytes memory v = (seed >> 200) & 1 == 1 ? _signerVoucher(id, x) : _voucher(id, x);
                if (!live || pay <= mClaimed) {
                    vm.expectRevert();
                    pc.claim(id, x, v);
                } else {
                    pc.claim(id, x, v);
                    mClaimed = pay;
                }
            } else if (op == 2) {
                vm.prank(payer);
                if (mStatus != 1) vm.expectRevert();
                pc.startClose(id);
                if (mStatus == 1) (mStatus, mClosesAt) = (2, block.timestamp + CP);
            } else if (op == 3) {
                vm.warp(block.timestamp + _bound(seed >> 24, 0, 2 * CP));
            } else if (op == 4) {
                if (mStatus != 2 || block.timestamp < mClosesAt) vm.expectRevert();
                pc.settle(id);
                if (mStatus == 2 && block.timestamp >= mClosesAt) mStatus = 3;
            } else if (op == 5) {
                bytes memory v = (seed >> 200) & 1 == 1 ? _signerVoucher(id, x) : _voucher(id, x);
                vm.prank(payee);
                if (!live) vm.expectRevert();
                pc.closeByPayee(id, x, v);
                if (live) mStatus = 3;
            } else {
                bytes memory v = (seed >> 200) & 1 == 1 ? _signerVoucher(id, x) : _voucher(id, x);
                bytes memory c = _consent(id, x);
                if (!live) vm.expectRevert();
                pc.cooperativeClose(id, x, _deadline(), v, c);
                if (live) mStatus = 3;
            }
            PaymentChannels.Channel memory ch = pc.getChannel(id);
            _assertEq(uint256(ch.status), mStatus, "status");
            if (mStatus != 3) {
                _assertEq(ch.deposit, mDeposit, "deposit");
                _assertEq(ch.claimed, mClaimed, "claimed");
                _assertEq(address(pc).balance, mDeposit - mClaimed, "held");
            } else {
                _assertEq(address(pc).balance, 0, "emptied");
                _assertTrue(payee.balance <= mDeposit, "payee <= deposit");
                return;
            }
        }
    }
}
