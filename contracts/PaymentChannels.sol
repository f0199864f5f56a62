// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title PaymentChannels
/// @notice Unidirectional payer -> payee payment channels in ETH or ERC-20, all held by this one
/// contract (Piecework protocol v2, see docs/PROTOCOL.md). The payer funds a channel and pays
/// per micro-task with off-chain EIP-712 `Voucher`s carrying a cumulative amount, signed by the
/// payer or by the channel's `voucherSigner` (a key the client app holds, fixed at `open`); the payee
/// claims whenever it likes and closes whenever it likes; the payer can force a close after a
/// challenge period. Funds only ever move to the channel's payer or payee.
/// @dev Reentrancy: there is no lock, because every function finishes its checks and writes all
/// of its state before its first external call (checks-effects-interactions), so a re-entrant
/// call (from a payout receiver or a token, each with at most `PAYOUT_GAS`) only ever sees
/// finished books:
/// - a channel that pays out is already closed or has its new `claimed` written, so re-entering
///   it pays nothing more (`NothingToClaim`, `ChannelNotOpen`);
/// - claimMany books every entry before the payout of its run, so a re-entrant claim or close of a
///   later entry makes that entry pay nothing and be skipped;
/// - the only write after a call is `owed[to][token] += amount` of a failed payout, a fresh read
///   after the call returned, of an account whose own call just failed;
/// - withdraw zeroes `owed` before it sends.
/// The pulls (open, openWithPermit, topUp) credit exactly `amount` and revert `FeeOnTransferToken`
/// unless the contract's balance grew by exactly that, so a token hook that re-enters to deposit
/// again makes the outer pull see too much and revert. The test suite re-enters every case.
/// Storage is three packed words per channel (see `_Slots`), chosen so that an ETH `open` writes
/// two fresh slots, `startClose` one nonzero -> nonzero slot, and a close only deletes. Amounts are
/// therefore capped at 2^96 - 1 (`MAX_DEPOSIT`, ~7.9e28: 79 billion tokens at 18 decimals), and
/// `open`/`topUp` revert `DepositTooLarge` beyond it.
contract PaymentChannels is EIP712 {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------- protocol types

    /// @notice Lifecycle of a channel id. `None` ids were never used; `Closed` ids stay used.
    enum Status {
        None,
        Open,
        Closing,
        Closed
    }

    /// @notice The stable external view of a channel (PROTOCOL.md), independent of the packing.
    struct Channel {
        address payer;
        address payee;
        address token;
        uint256 deposit;
        uint256 claimed;
        uint64 challengePeriod;
        uint64 closesAt;
        Status status;
        address voucherSigner;
    }

    /// @notice One entry of `claimMany`.
    struct Claim {
        bytes32 channelId;
        uint256 cumulativeAmount;
        bytes payerSignature;
    }

    /// @notice EIP-712 type of the voucher, signed by the payer or the channel's voucher signer.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)");
    /// @notice EIP-712 type of the payee's receipt for one task. Never verified on chain; published
    /// so every client hashes receipts with the same string.
    bytes32 public constant RECEIPT_TYPEHASH =
        keccak256("Receipt(bytes32 channelId,uint256 cumulativeAmount,uint256 amount,bytes32 taskId)");
    /// @notice EIP-712 type of the payee's consent to close at a final amount until `deadline`.
    bytes32 public constant CLOSE_CONSENT_TYPEHASH =
        keccak256("CloseConsent(bytes32 channelId,uint256 cumulativeAmount,uint64 deadline)");
    /// @notice EIP-712 type of the payer side's request for a close consent. Never verified on
    /// chain (the payee service checks it); published so every client hashes it alike.
    bytes32 public constant CLOSE_REQUEST_TYPEHASH =
        keccak256("CloseRequest(bytes32 channelId,uint256 cumulativeAmount)");
    /// @notice EIP-712 type of the payer side's proof of access to a channel's private reads at
    /// the payee service. Never verified on chain.
    bytes32 public constant ACCESS_TYPEHASH = keccak256("Access(bytes32 channelId,uint64 expires)");

    /// @notice Gas every payout's transfer gets (ETH call or ERC-20 `transfer`), the same for every
    /// token. A payout that reverts or runs out of it is deferred to `owed`; a call that leaves a
    /// payout less than this reverts `InsufficientGasForPayout` instead of deferring it.
    uint256 public constant PAYOUT_GAS = 100_000;

    /// @notice Upper bound on `challengePeriod` (30 days): long enough for any watchtower, short
    /// enough that a payer's refund cannot be locked for an unreasonable time.
    uint64 public constant MAX_CHALLENGE_PERIOD = 30 days;
    /// @notice Largest deposit a channel can hold (2^96 - 1), a consequence of the packed storage.
    uint256 public constant MAX_DEPOSIT = type(uint96).max;

    // ---------------------------------------------------------------- events

    /// @notice A channel was opened and funded.
    /// @param channelId The new channel's id.
    /// @param payer Who opened and funded it; receives refunds; may sign vouchers.
    /// @param payee Who is paid by the vouchers.
    /// @param token The ERC-20, or address(0) for ETH.
    /// @param deposit The initial deposit.
    /// @param challengePeriod Seconds between `startClose` and `settle`.
    /// @param voucherSigner The second key that may sign vouchers, or address(0).
    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address token,
        uint256 deposit,
        uint64 challengePeriod,
        address voucherSigner
    );
    /// @notice Funds were added to an open channel.
    /// @param channelId The channel.
    /// @param amount What was added.
    /// @param deposit The new total deposit.
    event ChannelToppedUp(bytes32 indexed channelId, uint256 amount, uint256 deposit);
    /// @notice The payee was paid (or credited in `owed`, see `PaymentDeferred`).
    /// @param channelId The channel.
    /// @param cumulativeAmount The channel's new claimed total, `min(voucher amount, deposit)`.
    /// @param paid What this claim paid, the increase of the claimed total.
    event Claimed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paid);
    /// @notice The payer started a unilateral close; `settle` is possible from `closesAt` on.
    /// @param channelId The channel.
    /// @param closesAt The block timestamp from which only `settle` is possible.
    event CloseStarted(bytes32 indexed channelId, uint64 closesAt);
    /// @notice The channel was closed for good.
    /// @param channelId The channel.
    /// @param payeeTotal What the payee received from the channel over its lifetime.
    /// @param payerRefund What went back to the payer now.
    event ChannelClosed(bytes32 indexed channelId, uint256 payeeTotal, uint256 payerRefund);
    /// @notice A payout reverted or ran out of `PAYOUT_GAS` (a contract that rejects ETH, a token
    /// that blacklists the receiver or burns gas); it was credited to `owed(account, token)`
    /// instead, so the operation that made it, and the other party's funds, went through.
    /// @param account The payer or payee the payout was for; it collects it with `withdraw`.
    /// @param token The token, or address(0) for ETH.
    /// @param amount The amount credited.
    event PaymentDeferred(address indexed account, address indexed token, uint256 amount);
    /// @notice An account withdrew its deferred payouts of one token.
    /// @param account The account that was owed.
    /// @param token The token, or address(0) for ETH.
    /// @param to Where the funds were sent.
    /// @param amount The amount sent.
    event Withdrawn(address indexed account, address indexed token, address to, uint256 amount);

    // ---------------------------------------------------------------- errors

    /// @notice `open` with an id that exists or existed (ids are never reusable).
    error ChannelIdUsed(bytes32 channelId);
    /// @notice The channel is not open (never opened, or closed) for this operation.
    error ChannelNotOpen(bytes32 channelId, Status status);
    /// @notice `topUp` / `startClose` on a channel whose close has started.
    error ChannelClosing(bytes32 channelId, uint64 closesAt);
    /// @notice `settle` on a channel without a started close.
    error ChannelNotClosing(bytes32 channelId, Status status);
    /// @notice Claim or close at or after `closesAt`: only `settle` is possible now.
    error ChallengePeriodOver(bytes32 channelId, uint64 closesAt);
    /// @notice `settle` before `closesAt`.
    error ChallengePeriodNotOver(bytes32 channelId, uint64 closesAt, uint256 timestamp);
    /// @notice challengePeriod is 0 or above `maxChallengePeriod`.
    error InvalidChallengePeriod(uint64 challengePeriod, uint64 maxChallengePeriod);
    /// @notice The payee is address(0).
    error InvalidPayee(address payee);
    /// @notice `open` / `topUp` of 0.
    error ZeroAmount();
    /// @notice The (new) deposit would exceed 2^96 - 1.
    error DepositTooLarge(uint256 deposit, uint256 maxDeposit);
    /// @notice ETH sent with an ERC-20 operation (or `openWithPermit` for ETH).
    error EthNotAccepted(uint256 value);
    /// @notice ETH operation with `msg.value != amount`.
    error WrongEthAmount(uint256 value, uint256 amount);
    /// @notice The contract's token balance grew by `received`, not by `expected`.
    error FeeOnTransferToken(address token, uint256 expected, uint256 received);
    /// @notice Only the payer may call this.
    error NotPayer(bytes32 channelId, address caller, address payer);
    /// @notice Only the payee may call this.
    error NotPayee(bytes32 channelId, address caller, address payee);
    /// @notice The signature is malformed, high-s, or not by `expectedSigner` over this message.
    /// For a voucher, `expectedSigner` is the payer (the channel's voucher signer was also tried).
    error InvalidSignature(bytes32 channelId, address expectedSigner, address recoveredSigner);
    /// @notice The voucher does not pay anything beyond what was already claimed.
    error NothingToClaim(bytes32 channelId, uint256 cumulativeAmount, uint256 claimed);
    /// @notice `withdraw` with no deferred balance.
    error NothingToWithdraw(address account, address token);
    /// @notice `withdraw` of ETH to a receiver that rejected it (the balance stays owed).
    error EthTransferFailed(address to, uint256 amount);
    /// @notice `token` has no code or does not answer `balanceOf`.
    error InvalidToken(address token);
    /// @notice `cooperativeClose` after the payee's consent expired (`deadline < block.timestamp`).
    error ConsentExpired(bytes32 channelId, uint64 deadline, uint256 timestamp);
    /// @notice A payout failed after the caller left it less than `PAYOUT_GAS`: it may have failed
    /// only for lack of gas, so the transaction reverts instead of deferring the payout.
    /// @param to The receiver of the payout.
    /// @param gasLeft The gas left right after the failed payout.
    error InsufficientGasForPayout(address to, uint256 gasLeft);

    // ---------------------------------------------------------------- storage

    /// @dev Three packed words per channel; bit offsets below (low bits first):
    ///   a: payer [0,160) | challengePeriod uint32 [160,192) | closesAt uint40 [192,232) | status uint8 [232,240)
    ///   b: payee [0,160) | deposit uint96 [160,256)
    ///   c: token [0,160) | claimed uint96 [160,256)
    /// For an ETH channel `c` stays zero until the first claim, so `open` costs two fresh slots.
    /// `a` holds status Open or Closing only. A close deletes `a` and `c` (the refunds pay part of
    /// the close) and leaves `b`: an opened channel's `b` is never zero (payee != 0), so
    /// a == 0 && b != 0 means Closed and keeps the id used forever, without writing a status.
    /// The final split is in the `ChannelClosed` event.
    struct _Slots {
        uint256 a;
        uint256 b;
        uint256 c;
    }

    mapping(bytes32 channelId => _Slots) private _channels;

    /// @dev The optional voucher signer, written only when set (an `open` without one costs no
    /// extra storage), read only when a voucher is not the payer's, and never changed.
    mapping(bytes32 channelId => address) private _voucherSigners;

    /// @notice Deferred payouts (see `PaymentDeferred`), by account and token (address(0) = ETH).
    mapping(address account => mapping(address token => uint256)) public owed;

    uint256 private constant _ADDR_MASK = (1 << 160) - 1;
    // Status as stored in bits [232,240) of word `a` (nothing above bit 240 is ever set).
    uint256 private constant _OPEN = uint256(Status.Open);
    uint256 private constant _CLOSING = uint256(Status.Closing);
    uint256 private constant _STATUS_OPEN = uint256(Status.Open) << 232;
    uint256 private constant _STATUS_CLOSING = uint256(Status.Closing) << 232;
    // A failed payout that leaves at most this much gas may have been starved (see `_pay`).
    uint256 private constant _STARVED_GAS_LEFT = PAYOUT_GAS / 63;

    constructor() EIP712("PaymentChannels", "2") {}

    // ---------------------------------------------------------------- open / fund

    /// @notice Opens a channel from `msg.sender` to `payee` and funds it with `amount`.
    /// @dev ETH (`token == address(0)`): `msg.value` must equal `amount`. ERC-20: pulls `amount`
    /// with transferFrom (approve first), no ETH allowed; tokens that deliver less than `amount`
    /// (fee-on-transfer) are rejected. The id is `channelId(msg.sender, payee, token, salt)` and can
    /// never be opened twice.
    /// @param payee Receiver of the vouchers' value; must not be address(0).
    /// @param token ERC-20 token, or address(0) for ETH.
    /// @param amount Deposit, 0 < amount <= MAX_DEPOSIT.
    /// @param challengePeriod Seconds between `startClose` and `settle`, 0 < p <= MAX_CHALLENGE_PERIOD.
    /// @param salt Payer-chosen salt that makes the id unique and known before mining.
    /// @param voucherSigner A key that may sign vouchers besides the payer, or address(0); fixed
    /// for the channel's life.
    /// @return id The new channel's id.
    function open(
        address payee,
        address token,
        uint256 amount,
        uint64 challengePeriod,
        bytes32 salt,
        address voucherSigner
    ) external payable returns (bytes32 id) {
        id = _open(payee, token, amount, challengePeriod, salt, voucherSigner);
    }

    /// @notice Opens an ERC-20 channel in one transaction using an EIP-2612 permit for `amount`.
    /// @dev The permit call is tried and its failure ignored: if someone front-ran the permit, the
    /// allowance is already in place and the open still succeeds; otherwise transferFrom reverts.
    /// @param payee Receiver of the vouchers' value.
    /// @param token EIP-2612 token (not address(0)).
    /// @param amount Deposit and permit value.
    /// @param challengePeriod Seconds between `startClose` and `settle`.
    /// @param salt Payer-chosen salt.
    /// @param voucherSigner A key that may sign vouchers besides the payer, or address(0).
    /// @param deadline Permit deadline.
    /// @param v Permit signature v.
    /// @param r Permit signature r.
    /// @param s Permit signature s.
    /// @return id The new channel's id.
    function openWithPermit(
        address payee,
        address token,
        uint256 amount,
        uint64 challengePeriod,
        bytes32 salt,
        address voucherSigner,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (bytes32 id) {
        if (token == address(0)) revert EthNotAccepted(0);
        try IERC20Permit(token).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        id = _open(payee, token, amount, challengePeriod, salt, voucherSigner);
    }

    /// @notice Adds `amount` to an open channel's deposit. Anyone may fund any open channel.
    /// @dev Not allowed once `startClose` was called (`ChannelClosing`). ETH: `msg.value == amount`.
    /// @param id The channel to fund.
    /// @param amount Amount added (> 0); the new deposit must stay <= MAX_DEPOSIT.
    function topUp(bytes32 id, uint256 amount) external payable {
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        if (a >> 232 != _OPEN) {
            if (a >> 232 == _CLOSING) revert ChannelClosing(id, _closesAtOf(a));
            revert ChannelNotOpen(id, _statusOf(ch, a));
        }
        if (amount == 0) revert ZeroAmount();
        uint256 b = ch.b;
        uint256 current = b >> 160;
        if (amount > MAX_DEPOSIT - current) {
            // saturate so that even a uint256-overflowing request reports DepositTooLarge
            revert DepositTooLarge(amount > type(uint256).max - current ? type(uint256).max : current + amount, MAX_DEPOSIT);
        }
        // Safe: checked just above that current + amount <= MAX_DEPOSIT.
        uint256 deposit;
        unchecked {
            deposit = current + amount;
        }
        ch.b = (b & _ADDR_MASK) | (deposit << 160);
        emit ChannelToppedUp(id, amount, deposit);
        _pullFunds(address(uint160(ch.c)), amount);
    }

    // ---------------------------------------------------------------- pay out

    /// @notice Pays the payee `min(cumulativeAmount, deposit) - claimed`; the channel stays open.
    /// Anyone may submit a voucher (the money only goes to the payee).
    /// @dev Allowed while open and while closing until `closesAt`. Reverts `NothingToClaim` if the
    /// voucher pays nothing, `InvalidSignature` unless the payer or the channel's voucher signer
    /// signed Voucher(id, cumulativeAmount). A payout that fails is deferred to `owed`.
    /// @param id The channel.
    /// @param cumulativeAmount The voucher's cumulative amount.
    /// @param payerSignature 65-byte EIP-712 Voucher signature of the payer or the voucher signer.
    function claim(bytes32 id, uint256 cumulativeAmount, bytes calldata payerSignature) external {
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        _requireLive(ch, id, a);
        uint256 c = ch.c;
        uint256 claimed = c >> 160;
        uint256 b = ch.b;
        uint256 newClaimed = _min(cumulativeAmount, b >> 160);
        if (newClaimed <= claimed) revert NothingToClaim(id, cumulativeAmount, claimed);
        _verifyVoucher(id, cumulativeAmount, payerSignature, address(uint160(a)));
        ch.c = (c & _ADDR_MASK) | (newClaimed << 160);
        // Safe: newClaimed > claimed was checked above.
        unchecked {
            emit Claimed(id, newClaimed, newClaimed - claimed);
            _pay(address(uint160(c)), address(uint160(b)), newClaimed - claimed);
        }
    }

    /// @notice `claim` for many channels in one transaction. Entries that would pay nothing (stale
    /// voucher, channel not open or past `closesAt`, duplicate) are skipped without checking their
    /// signature; any other entry with a bad signature reverts the whole batch.
    /// @dev Consecutive entries with the same (payee, token) are paid with one transfer, so sort
    /// the batch by payee and token to pay once per run.
    /// @param claims The vouchers to redeem.
    function claimMany(Claim[] calldata claims) external {
        address runPayee;
        address runToken;
        uint256 runAmount;
        uint256 n = claims.length;
        for (uint256 i; i < n; ) {
            (address payee, address token, uint256 paid) = _claimEntry(claims[i]);
            if (paid != 0) {
                if (payee != runPayee || token != runToken) {
                    if (runAmount != 0) _pay(runToken, runPayee, runAmount);
                    (runPayee, runToken, runAmount) = (payee, token, 0);
                }
                // Safe: each payout is <= its channel's deposit, and the sum of all deposits is
                // bounded by what the contract holds (at most the total supply of ETH / the token).
                unchecked {
                    runAmount += paid;
                }
            }
            // Safe: i < n <= calldata length, far below 2^256.
            unchecked {
                ++i;
            }
        }
        if (runAmount != 0) _pay(runToken, runPayee, runAmount);
    }

    // ---------------------------------------------------------------- close

    /// @notice Payee only: claims with a voucher and closes at once; the rest of the deposit goes
    /// back to the payer.
    /// @dev A voucher not above `claimed` adds nothing and its signature is not checked, so the
    /// payee can always close (e.g. to refund the payer) with `cumulativeAmount = 0` and empty bytes.
    /// @param id The channel.
    /// @param cumulativeAmount The voucher's cumulative amount.
    /// @param payerSignature The Voucher signature (payer or voucher signer).
    function closeByPayee(bytes32 id, uint256 cumulativeAmount, bytes calldata payerSignature) external {
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        _requireLive(ch, id, a);
        uint256 b = ch.b;
        if (msg.sender != address(uint160(b))) revert NotPayee(id, msg.sender, address(uint160(b)));
        _closeWithVoucher(ch, id, a, b, cumulativeAmount, payerSignature);
    }

    /// @notice Anyone: closes at once with the payee's `CloseConsent(channelId, cumulativeAmount,
    /// deadline)` and a `Voucher` for the same amount; the payee is paid up to that amount (capped
    /// by the deposit) and the payer gets the rest.
    /// @dev Reverts `ConsentExpired` once `block.timestamp > deadline` (at `deadline` it still
    /// closes). The voucher is only checked when it pays the payee something beyond `claimed`
    /// (otherwise `payerSignature` may be empty).
    /// @param id The channel.
    /// @param cumulativeAmount The final cumulative amount both parties agree on.
    /// @param deadline The last block timestamp at which the payee's consent is valid.
    /// @param payerSignature The Voucher signature (payer or voucher signer).
    /// @param payeeSignature The payee's EIP-712 CloseConsent signature.
    function cooperativeClose(
        bytes32 id,
        uint256 cumulativeAmount,
        uint64 deadline,
        bytes calldata payerSignature,
        bytes calldata payeeSignature
    ) external {
        if (block.timestamp > deadline) revert ConsentExpired(id, deadline, block.timestamp);
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        _requireLive(ch, id, a);
        uint256 b = ch.b;
        _verifyConsent(id, cumulativeAmount, deadline, payeeSignature, address(uint160(b)));
        _closeWithVoucher(ch, id, a, b, cumulativeAmount, payerSignature);
    }

    /// @notice Payer only: starts a unilateral close; `closesAt = now + challengePeriod`. Until
    /// then the payee (or anyone with its voucher) can still claim or close; from then on only
    /// `settle`. Top-ups are no longer accepted.
    /// @param id The channel.
    function startClose(bytes32 id) external {
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        if (a >> 232 != _OPEN) {
            if (a >> 232 == _CLOSING) revert ChannelClosing(id, _closesAtOf(a));
            revert ChannelNotOpen(id, _statusOf(ch, a));
        }
        if (msg.sender != address(uint160(a))) revert NotPayer(id, msg.sender, address(uint160(a)));
        // Safe: challengePeriod <= 30 days and block.timestamp fits 40 bits for ~35,000 years.
        uint64 closesAt;
        unchecked {
            closesAt = uint64(block.timestamp + _challengePeriodOf(a));
        }
        ch.a = (a & ((1 << 192) - 1)) | (uint256(closesAt) << 192) | _STATUS_CLOSING;
        emit CloseStarted(id, closesAt);
    }

    /// @notice Anyone, once `block.timestamp >= closesAt`: refunds `deposit - claimed` to the
    /// payer and closes the channel.
    /// @param id The channel.
    function settle(bytes32 id) external {
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        if (a >> 232 != _CLOSING) revert ChannelNotClosing(id, _statusOf(ch, a));
        uint64 closesAt = _closesAtOf(a);
        if (block.timestamp < closesAt) revert ChallengePeriodNotOver(id, closesAt, block.timestamp);
        uint256 c = ch.c;
        uint256 claimed = c >> 160;
        // Safe: claimed <= deposit is an invariant of every write to `b` and `c`.
        uint256 refund;
        unchecked {
            refund = (ch.b >> 160) - claimed;
        }
        delete ch.a;
        delete ch.c;
        emit ChannelClosed(id, claimed, refund);
        if (refund != 0) _pay(address(uint160(c)), address(uint160(a)), refund);
    }

    /// @notice Collects the caller's deferred payouts of `token` (address(0) = ETH) and sends
    /// them to `to` (which may differ from the caller, e.g. when the caller cannot receive ETH).
    /// @dev Sends with all the gas the caller gives: the caller is the receiver's own side.
    /// @param token The token, or address(0) for ETH.
    /// @param to Receiver of the funds.
    function withdraw(address token, address to) external {
        uint256 amount = owed[msg.sender][token];
        if (amount == 0) revert NothingToWithdraw(msg.sender, token);
        owed[msg.sender][token] = 0;
        emit Withdrawn(msg.sender, token, to, amount);
        if (token == address(0)) {
            bool ok;
            assembly ("memory-safe") {
                ok := call(gas(), to, amount, 0, 0, 0, 0)
            }
            if (!ok) revert EthTransferFailed(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice The channel's state in the stable protocol shape. A closed channel reads as
    /// status Closed with its payee and voucher signer; payer, token, amounts, challengePeriod and
    /// closesAt read as zero (its storage was cleared; the final split is in `ChannelClosed`).
    /// @param id The channel.
    /// @return channel The channel's fields.
    function getChannel(bytes32 id) external view returns (Channel memory channel) {
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        uint256 b = ch.b;
        channel.voucherSigner = _voucherSigners[id];
        if (a == 0) {
            if (b != 0) (channel.payee, channel.status) = (address(uint160(b)), Status.Closed);
            return channel;
        }
        uint256 c = ch.c;
        channel.payer = address(uint160(a));
        channel.payee = address(uint160(b));
        channel.token = address(uint160(c));
        channel.deposit = b >> 160;
        channel.claimed = c >> 160;
        channel.challengePeriod = _challengePeriodOf(a);
        channel.closesAt = _closesAtOf(a);
        channel.status = Status(uint8(a >> 232));
    }

    /// @notice The id a channel from `payer` to `payee` in `token` with `salt` gets.
    /// @param payer The payer.
    /// @param payee The payee.
    /// @param token The token (address(0) for ETH).
    /// @param salt The payer's salt.
    /// @return The id, `keccak256(abi.encode(payer, payee, token, salt))`.
    function channelId(address payer, address payee, address token, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(payer, payee, token, salt));
    }

    /// @notice EIP-712 digest the payer or voucher signer signs for `Voucher(channelId, cumulativeAmount)`.
    /// @param id The channel.
    /// @param cumulativeAmount The cumulative amount.
    /// @return The digest.
    function hashVoucher(bytes32 id, uint256 cumulativeAmount) external view returns (bytes32) {
        return _digest(VOUCHER_TYPEHASH, id, cumulativeAmount);
    }

    /// @notice EIP-712 digest the payee signs for `CloseConsent(channelId, cumulativeAmount, deadline)`.
    /// @param id The channel.
    /// @param cumulativeAmount The final cumulative amount.
    /// @param deadline The consent's deadline (unix seconds, block time).
    /// @return The digest.
    function hashCloseConsent(bytes32 id, uint256 cumulativeAmount, uint64 deadline) external view returns (bytes32) {
        return _consentDigest(id, cumulativeAmount, deadline);
    }

    // ---------------------------------------------------------------- internals

    function _open(
        address payee,
        address token,
        uint256 amount,
        uint64 challengePeriod,
        bytes32 salt,
        address voucherSigner
    ) private returns (bytes32 id) {
        id = channelId(msg.sender, payee, token, salt);
        _Slots storage ch = _channels[id];
        // Reading `b` costs nothing extra for a fresh id: it warms the slot written just below.
        if (ch.a != 0 || ch.b != 0) revert ChannelIdUsed(id);
        if (payee == address(0)) revert InvalidPayee(payee);
        if (challengePeriod == 0 || challengePeriod > MAX_CHALLENGE_PERIOD) {
            revert InvalidChallengePeriod(challengePeriod, MAX_CHALLENGE_PERIOD);
        }
        if (amount == 0) revert ZeroAmount();
        if (amount > MAX_DEPOSIT) revert DepositTooLarge(amount, MAX_DEPOSIT);
        ch.a = uint256(uint160(msg.sender)) | (uint256(challengePeriod) << 160) | _STATUS_OPEN;
        ch.b = uint256(uint160(payee)) | (amount << 160);
        if (token != address(0)) ch.c = uint256(uint160(token));
        if (voucherSigner != address(0)) _voucherSigners[id] = voucherSigner;
        emit ChannelOpened(id, msg.sender, payee, token, amount, challengePeriod, voucherSigner);
        _pullFunds(token, amount);
    }

    /// @dev One claimMany entry: books the claim and returns what the payee is owed (0 = skipped).
    function _claimEntry(Claim calldata cl) private returns (address payee, address token, uint256 paid) {
        bytes32 id = cl.channelId;
        _Slots storage ch = _channels[id];
        uint256 a = ch.a;
        if (!_isLive(a)) return (address(0), address(0), 0);
        uint256 c = ch.c;
        uint256 claimed = c >> 160;
        uint256 b = ch.b;
        uint256 newClaimed = _min(cl.cumulativeAmount, b >> 160);
        if (newClaimed <= claimed) return (address(0), address(0), 0);
        _verifyVoucher(id, cl.cumulativeAmount, cl.payerSignature, address(uint160(a)));
        ch.c = (c & _ADDR_MASK) | (newClaimed << 160);
        // Safe: newClaimed > claimed was checked above.
        unchecked {
            paid = newClaimed - claimed;
        }
        emit Claimed(id, newClaimed, paid);
        return (address(uint160(b)), address(uint160(c)), paid);
    }

    /// @dev Takes `amount` of `token` from msg.sender (ETH: checks msg.value) and checks that all
    /// of it arrived, so the books never credit more than the contract holds.
    function _pullFunds(address token, uint256 amount) private {
        if (token == address(0)) {
            if (msg.value != amount) revert WrongEthAmount(msg.value, amount);
            return;
        }
        if (msg.value != 0) revert EthNotAccepted(msg.value);
        uint256 before = _selfBalance(token);
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = _selfBalance(token) - before;
        if (received != amount) revert FeeOnTransferToken(token, amount, received);
    }

    /// @dev `token.balanceOf(address(this))` without the high-level call's extcodesize check and
    /// ABI decoder: a call to an account without code, a revert or a short answer reverts.
    function _selfBalance(address token) private view returns (uint256 bal) {
        assembly ("memory-safe") {
            mstore(0x00, 0x70a08231) // balanceOf(address)
            mstore(0x20, address())
            if iszero(and(gt(returndatasize(), 0x1f), staticcall(gas(), token, 0x1c, 0x24, 0x00, 0x20))) {
                mstore(0x00, 0x961c9a4f) // InvalidToken(address)
                mstore(0x20, token)
                revert(0x1c, 0x24)
            }
            bal := mload(0x00)
        }
    }

    /// @dev Shared tail of closeByPayee / cooperativeClose: pay up to the voucher, refund the rest.
    function _closeWithVoucher(
        _Slots storage ch,
        bytes32 id,
        uint256 a,
        uint256 b,
        uint256 cumulativeAmount,
        bytes calldata payerSignature
    ) private {
        uint256 c = ch.c;
        uint256 claimed = c >> 160;
        uint256 deposit = b >> 160;
        uint256 payeeTotal = _min(cumulativeAmount, deposit);
        if (payeeTotal > claimed) {
            _verifyVoucher(id, cumulativeAmount, payerSignature, address(uint160(a)));
        } else {
            payeeTotal = claimed;
        }
        delete ch.a;
        delete ch.c;
        // Safe: claimed <= payeeTotal <= deposit.
        unchecked {
            emit ChannelClosed(id, payeeTotal, deposit - payeeTotal);
            address token = address(uint160(c));
            if (payeeTotal != claimed) _pay(token, address(uint160(b)), payeeTotal - claimed);
            if (deposit != payeeTotal) _pay(token, address(uint160(a)), deposit - payeeTotal);
        }
    }

    /// @dev Sends funds with exactly `PAYOUT_GAS` for the transfer. A payout that reverts, runs out
    /// of that budget, or (ERC-20) returns something other than true or nothing, is credited to
    /// `owed` instead of failing the operation: neither a receiver that rejects ETH nor a token
    /// that burns gas can block the other party's funds or make the caller's transaction a gas
    /// bomb. Return data is never copied beyond one word, so it cannot be a return bomb either.
    /// EIP-150 passes a call at most 63/64 of the gas left. If the call got less than PAYOUT_GAS,
    /// the caller keeps 1/64 of at most PAYOUT_GAS * 64/63, i.e. at most PAYOUT_GAS / 63 once the
    /// callee burnt its share; if it got all of PAYOUT_GAS and burnt it, at least that much stays.
    /// So a failed payout with at most `_STARVED_GAS_LEFT` left may have failed only because the
    /// caller's gas limit starved it, and the transaction reverts instead of deferring a payout
    /// that would have succeeded (the one gas value where both meet also reverts). The gas is read
    /// by the first opcode after the call; a successful payout pays nothing for the check.
    function _pay(address token, address to, uint256 amount) private {
        bool ok;
        uint256 left;
        // Yul evaluates arguments right to left, so in `or(shl(1, gas()), call(...))` the GAS
        // opcode runs right after CALL returns, with no stack shuffling in between: `left` is
        // exactly the gas left after the call, less GAS's own 2.
        if (token == address(0)) {
            assembly ("memory-safe") {
                let packed := or(shl(1, gas()), call(PAYOUT_GAS, to, amount, 0, 0, 0, 0))
                ok := and(packed, 1)
                left := shr(1, packed)
            }
        } else {
            // transfer(to, amount) from scratch space; the call is successful when it did not
            // revert and returned true, or returned nothing from an account with code (checked
            // only then: EXTCODESIZE costs 100 even on a warm account).
            assembly ("memory-safe") {
                let fmp := mload(0x40)
                mstore(0x14, to)
                mstore(0x34, amount)
                mstore(0x00, 0xa9059cbb000000000000000000000000)
                let packed := or(shl(1, gas()), call(PAYOUT_GAS, token, 0, 0x10, 0x44, 0x00, 0x20))
                ok := and(packed, 1)
                left := shr(1, packed)
                if ok {
                    if iszero(and(eq(mload(0x00), 1), gt(returndatasize(), 0x1f))) {
                        ok := and(iszero(returndatasize()), gt(extcodesize(token), 0))
                    }
                }
                mstore(0x40, fmp)
            }
        }
        if (!ok) {
            // `left` was read by a GAS opcode (2 gas) after the call: add it back.
            if (left + 2 <= _STARVED_GAS_LEFT) revert InsufficientGasForPayout(to, left);
            owed[to][token] += amount;
            emit PaymentDeferred(to, token, amount);
        }
    }

    /// @dev A voucher must be signed by the channel's payer, or by its voucher signer when set.
    /// The signer's slot is read only when the signature is not the payer's.
    function _verifyVoucher(bytes32 id, uint256 amount, bytes calldata signature, address payer) private view {
        // tryRecover gives address(0) for every malformed or high-s signature, and the payer and
        // a set voucher signer are never address(0), so comparing addresses covers the error.
        (address recovered, , ) = ECDSA.tryRecoverCalldata(_digest(VOUCHER_TYPEHASH, id, amount), signature);
        if (recovered == payer) return;
        if (recovered == address(0) || recovered != _voucherSigners[id]) revert InvalidSignature(id, payer, recovered);
    }

    function _verifyConsent(bytes32 id, uint256 amount, uint64 deadline, bytes calldata signature, address payee)
        private
        view
    {
        (address recovered, , ) = ECDSA.tryRecoverCalldata(_consentDigest(id, amount, deadline), signature);
        // as in _verifyVoucher: a failed recovery gives address(0), never a channel's payee
        if (recovered != payee) revert InvalidSignature(id, payee, recovered);
    }

    function _consentDigest(bytes32 id, uint256 amount, uint64 deadline) private view returns (bytes32) {
        bytes32 structHash;
        bytes32 typehash = CLOSE_CONSENT_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            mstore(add(ptr, 0x20), id)
            mstore(add(ptr, 0x40), amount)
            mstore(add(ptr, 0x60), deadline)
            structHash := keccak256(ptr, 0x80)
        }
        return _hashTypedDataV4(structHash);
    }

    function _digest(bytes32 typehash, bytes32 id, uint256 amount) private view returns (bytes32) {
        bytes32 structHash;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            mstore(add(ptr, 0x20), id)
            mstore(add(ptr, 0x40), amount)
            structHash := keccak256(ptr, 0x60)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @dev Claims and closes are possible while open, and while closing until `closesAt`.
    function _requireLive(_Slots storage ch, bytes32 id, uint256 a) private view {
        uint256 status = a >> 232;
        if (status == _OPEN) return;
        if (status != _CLOSING) revert ChannelNotOpen(id, _statusOf(ch, a));
        uint64 closesAt = _closesAtOf(a);
        if (block.timestamp >= closesAt) revert ChallengePeriodOver(id, closesAt);
    }

    function _isLive(uint256 a) private view returns (bool) {
        uint256 status = a >> 232;
        return status == _OPEN || (status == _CLOSING && block.timestamp < _closesAtOf(a));
    }

    /// @dev Status from word `a`, or, when `a` is empty, from `b` (see `_Slots`). Only error paths
    /// and views call it, so only they pay for reading `b`.
    function _statusOf(_Slots storage ch, uint256 a) private view returns (Status) {
        if (a != 0) return Status(uint8(a >> 232));
        return ch.b == 0 ? Status.None : Status.Closed;
    }

    function _closesAtOf(uint256 a) private pure returns (uint64) {
        return uint64(uint40(a >> 192));
    }

    function _challengePeriodOf(uint256 a) private pure returns (uint64) {
        return uint64(uint32(a >> 160));
    }

    function _min(uint256 x, uint256 y) private pure returns (uint256) {
        return x < y ? x : y;
    }
}
