// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {vm} from "./Vm.sol";
import {Base, Sig} from "./Base.t.sol";
import {PaymentChannels} from "../PaymentChannels.sol";

/// @notice The voucher signer (PROTOCOL.md v2 change 1): who may sign vouchers, who may not, and
/// that the signer is fixed for the channel's life.
contract VoucherSignerTest is Base {
    uint256 internal constant STRANGER_KEY = 0x57A4;

    function test_open_storesAndEmitsVoucherSigner() public {
        bytes32 expected = pc.channelId(payer, payee, address(usd), bytes32(uint256(9)));
        vm.expectEmit(true, true, true, true, address(pc));
        emit PaymentChannels.ChannelOpened(expected, payer, payee, address(usd), 500, CP, signer);
        vm.prank(payer);
        bytes32 id = pc.open(payee, address(usd), 500, CP, bytes32(uint256(9)), signer);
        _assertTrue(id == expected, "id does not depend on the signer");
        PaymentChannels.Channel memory c = pc.getChannel(id);
        _assertTrue(c.voucherSigner == signer && c.payer == payer, "signer and payer");
    }

    function test_open_withoutSignerReadsZero() public {
        bytes32 id = _openEth(1 ether);
        _assertTrue(pc.getChannel(id).voucherSigner == address(0), "no signer");
    }

    /// Vouchers from the signer and from the payer both pay, interleaved, on ETH and token channels.
    function test_signerAndPayerVouchersBothPay() public {
        for (uint256 t; t < 2; ++t) {
            bool token = t == 1;
            bytes32 id = _openWithSigner(1000, token);
            pc.claim(id, 100, _signerVoucher(id, 100));
            pc.claim(id, 250, _voucher(id, 250));
            vm.expectEmit(true, true, true, true, address(pc));
            emit PaymentChannels.Claimed(id, 400, 150);
            pc.claim(id, 400, _signerVoucher(id, 400));
            _assertEq(pc.getChannel(id).claimed, 400, "claimed");
        }
        _assertEq(payee.balance, 400, "eth paid");
        _assertEq(usd.balanceOf(payee), 400, "usd paid");
    }

    function test_signerVoucherWorksInClaimManyAndBothCloses() public {
        bytes32 a = _openWithSigner(1000, false);
        bytes32 b = _openWithSigner(1000, true);
        PaymentChannels.Claim[] memory cs = new PaymentChannels.Claim[](2);
        cs[0] = PaymentChannels.Claim(a, 300, _signerVoucher(a, 300));
        cs[1] = PaymentChannels.Claim(b, 200, _signerVoucher(b, 200));
        pc.claimMany(cs);
        _assertEq(payee.balance + usd.balanceOf(payee), 500, "batch paid");

        vm.prank(payee);
        pc.closeByPayee(a, 600, _signerVoucher(a, 600));
        _assertEq(payee.balance, 600, "closeByPayee with the signer's voucher");

        uint256 before = usd.balanceOf(payer);
        pc.cooperativeClose(b, 700, _deadline(), _signerVoucher(b, 700), _consent(b, 700));
        _assertEq(usd.balanceOf(payee), 700, "cooperativeClose with the signer's voucher");
        _assertEq(usd.balanceOf(payer) - before, 300, "refund to the payer, not the signer");
        _assertEq(signer.balance + usd.balanceOf(signer), 0, "the signer never receives funds");
    }

    /// A voucher signed by neither this channel's payer nor its signer never pays: a stranger, the
    /// payee, the payer's signer of ANOTHER channel, another payer, and the signer on a channel
    /// opened without one.
    function test_foreignSignersNeverPay() public {
        bytes32 id = _openWithSigner(1000, false);
        // another payer's channel with its own voucher signer
        uint256 otherSignerKey = 0x0751;
        vm.prank(other);
        bytes32 otherId = pc.open{value: 1000}(payee, address(0), 1000, CP, _salt(), vm.addr(otherSignerKey));
        uint256[4] memory keys = [STRANGER_KEY, PAYEE_KEY, otherSignerKey, OTHER_KEY];
        for (uint256 i; i < keys.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, id, payer, vm.addr(keys[i]))
            );
            pc.claim(id, 100, _voucherBy(keys[i], id, 100));
        }
        // this channel's signer cannot sign for the other channel either
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, otherId, other, signer));
        pc.claim(otherId, 100, _signerVoucher(otherId, 100));
        // a channel without a signer: the would-be signer's voucher is foreign
        bytes32 plain = _openEth(1000);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, plain, payer, signer));
        pc.claim(plain, 100, _signerVoucher(plain, 100));
        _assertEq(payee.balance, 0, "nothing paid");
    }

    function test_foreignSignersNeverCloseWithPayment() public {
        bytes32 id = _openWithSigner(1000, true);
        vm.prank(payee);
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.closeByPayee(id, 500, _voucherBy(STRANGER_KEY, id, 500));
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.cooperativeClose(id, 500, _deadline(), _voucherBy(STRANGER_KEY, id, 500), _consent(id, 500));
        _assertTrue(pc.getChannel(id).status == PaymentChannels.Status.Open, "still open");
    }

    /// The voucher signer stands in for the payer's vouchers only: a CloseConsent needs the payee.
    function test_signerCannotSignCloseConsent() public {
        bytes32 id = _openWithSigner(1000, false);
        uint64 deadline = _deadline();
        bytes memory signerConsent =
            Sig.sign(SIGNER_KEY, Sig.consentDigest(id, 10, deadline, block.chainid, address(pc)));
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, id, payee, signer));
        pc.cooperativeClose(id, 10, deadline, _signerVoucher(id, 10), signerConsent);
    }

    /// The signer's high-s twin is rejected like the payer's.
    function test_signerHighSRejected() public {
        bytes32 id = _openWithSigner(1000, false);
        bytes32 h = Sig.digest(Sig.VOUCHER, id, 100, block.chainid, address(pc));
        vm.expectPartialRevert(PaymentChannels.InvalidSignature.selector);
        pc.claim(id, 100, Sig.highS(SIGNER_KEY, h));
    }

    /// There is no way to change the signer: no function for it, the id cannot be reopened with
    /// another one, and every operation leaves it as set at open.
    function test_signerCannotBeChanged() public {
        bytes32 salt = _salt();
        vm.prank(payer);
        bytes32 id = pc.open{value: 1 ether}(payee, address(0), 1 ether, CP, salt, signer);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.ChannelIdUsed.selector, id));
        pc.open{value: 1 ether}(payee, address(0), 1 ether, CP, salt, vm.addr(STRANGER_KEY));

        // no setter under any plausible name, and no fallback that would accept one
        bytes4[4] memory setters = [
            bytes4(keccak256("setVoucherSigner(bytes32,address)")),
            bytes4(keccak256("changeVoucherSigner(bytes32,address)")),
            bytes4(keccak256("updateVoucherSigner(bytes32,address)")),
            bytes4(keccak256("voucherSigner(bytes32,address)"))
        ];
        for (uint256 i; i < setters.length; ++i) {
            vm.prank(payer);
            (bool ok, ) = address(pc).call(abi.encodeWithSelector(setters[i], id, vm.addr(STRANGER_KEY)));
            _assertTrue(!ok, "a setter answered");
        }

        vm.prank(payer);
        pc.topUp{value: 1 ether}(id, 1 ether);
        pc.claim(id, 10, _signerVoucher(id, 10));
        vm.prank(payer);
        pc.startClose(id);
        _assertTrue(pc.getChannel(id).voucherSigner == signer, "unchanged while closing");
        pc.claim(id, 20, _signerVoucher(id, 20));
        vm.warp(block.timestamp + CP);
        pc.settle(id);
        _assertTrue(pc.getChannel(id).voucherSigner == signer, "unchanged after close");
    }

    /// The voucher signer has no payer powers: it cannot start a close.
    function test_signerIsNotThePayer() public {
        bytes32 id = _openWithSigner(1000, false);
        vm.prank(signer);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.NotPayer.selector, id, signer, payer));
        pc.startClose(id);
    }

    /// A voucher from the signer, as from the payer, pays at most the deposit.
    function testFuzz_signerVoucherCappedAtDeposit(uint96 depositSeed, uint256 amount) public {
        uint256 deposit = 1 + (uint256(depositSeed) % 1e24);
        vm.assume(amount != 0);
        bytes32 id = _openWithSigner(deposit, true);
        pc.claim(id, amount, _signerVoucher(id, amount));
        _assertEq(usd.balanceOf(payee), amount < deposit ? amount : deposit, "paid");
    }

    /// Any key other than the payer's and the signer's is refused.
    function testFuzz_randomKeyNeverPays(uint256 keySeed, uint256 amount) public {
        uint256 key = 1 + (keySeed % (Sig.N - 1));
        vm.assume(key != PAYER_KEY && key != SIGNER_KEY && amount != 0);
        bytes32 id = _openWithSigner(1 ether, false);
        vm.expectRevert(abi.encodeWithSelector(PaymentChannels.InvalidSignature.selector, id, payer, vm.addr(key)));
        pc.claim(id, amount, _voucherBy(key, id, amount));
    }
}
