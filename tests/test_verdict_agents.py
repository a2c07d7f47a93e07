"""app.verdicts.agents: what the User-Agent alone proves, over real UA strings from public sources.

Each case names its source: DD = matomo-org/device-detector (Tests/fixtures/bots.yml,
Tests/Parser/Client/fixtures/pim.yml), CUA = monperrus/crawler-user-agents crawler-user-agents.json,
ISBOT = omrilotan/isbot fixtures/browsers.yml (the browsers isbot must *not* flag), RES =
/work/shared/research/machine-traffic.md, and named issues or files for the rest.
"""

# ruff: noqa: E501  (the cases are verbatim user agents; splitting them would hide what they are)

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.verdicts.agents import REASON_CODES, agent_reasons

GMAIL_PREFETCH_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0"
)
IMESSAGE_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) "
    "Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0"
)

# (source, kind, user agent, expected code)
MACHINES: list[tuple[str, str, str, str]] = [
    # no_user_agent
    ("RES 3 row 4", "open", "", "no_user_agent"),
    ("RES 3 row 4", "click", "   \t", "no_user_agent"),
    # apple_mpp / minimal_user_agent
    ("uap-core#509; RES 2.1", "open", "Mozilla/5.0", "apple_mpp"),
    ("uap-core#509, on a click", "click", "Mozilla/5.0", "minimal_user_agent"),
    ("bare product token", "open", "Mozilla/4.0", "minimal_user_agent"),
    # gmail_prefetch
    ("keila lib/keila/tracking/tracking.ex", "open", GMAIL_PREFETCH_UA, "gmail_prefetch"),
    ("keila, on a click", "click", GMAIL_PREFETCH_UA, "gmail_prefetch"),
    (
        "mssola/user_agent#71",
        "click",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Gmail-content-sampling",
        "gmail_prefetch",
    ),
    # office_discovery
    ("elifesciences/builder PR #333", "click", "Microsoft Office Existence Discovery", "office_discovery"),
    ("elifesciences/builder PR #333", "open", "Microsoft Office Existence Discovery", "office_discovery"),
    ("IdentityServer3#2627", "click", "Microsoft Office Protocol Discovery", "office_discovery"),
    ("MS-ADFSPIP 3.13.5.2.2", "click", "Microsoft-WebDAV-MiniRedir/10.0.19045", "office_discovery"),
    ("MS-ADFSPIP 3.13.5.2.2", "click", "Mozilla/4.0 (compatible; MS FrontPage)", "office_discovery"),
    (
        "fnando/browser#112 (Word's pre-request)",
        "click",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X) Word/14.44.0",
        "office_discovery",
    ),
    (
        "ISBOT Outlook entry, on a click",
        "click",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
        "office_discovery",
    ),
    (
        "ISBOT PowerPoint",
        "click",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft PowerPoint 16.0.10325; Pro)",
        "office_discovery",
    ),
    ("ISBOT Office", "click", "Microsoft Office/16.0 (Windows NT 10.0; MAPI 16.0.8431; Pro)", "office_discovery"),
    # scanner_user_agent
    ("DD bots; Braze SMS bot filter", "click", "Barracuda Sentinel (EE)", "scanner_user_agent"),
    (
        "DD bots",
        "click",
        "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
        "scanner_user_agent",
    ),
    ("DD bots", "click", "Arachni/v1.5.1", "scanner_user_agent"),
    ("DD bots", "open", "TLSProbe/1.0 (+https://scan.trustnet.venafi.com/)", "scanner_user_agent"),
    ("CUA zgrab", "click", "Mozilla/5.0 zgrab/0.x", "scanner_user_agent"),
    ("CUA K7MLWCBot (virus scanner)", "click", "K7MLWCBot/1.0 (+http://www.k7computing.com)", "scanner_user_agent"),
    # link_preview
    ("CUA Slackbot", "click", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "link_preview"),
    ("CUA Slackbot", "click", "Slackbot 1.0 (+https://api.slack.com/robots)", "link_preview"),
    ("CUA Slack-ImgProxy", "open", "Slack-ImgProxy (+https://api.slack.com/robots)", "link_preview"),
    ("CUA Slack-ImgProxy", "open", "Slack-ImgProxy 1.138 (+https://api.slack.com/robots)", "link_preview"),
    ("CUA SkypeUriPreview", "click", "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5", "link_preview"),
    (
        "Bing crawlers page (MicrosoftPreview)",
        "click",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; MicrosoftPreview/2.0; "
        "+https://aka.ms/MicrosoftPreview) Chrome/W.X.Y.Z Safari/537.36",
        "link_preview",
    ),
    (
        "CUA BingPreview",
        "click",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
        "link_preview",
    ),
    (
        "CUA BingPreview",
        "click",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 7_0 like Mac OS X) AppleWebKit/537.51.1 (KHTML, like Gecko) "
        "Version/7.0 Mobile/11A465 Safari/9537.53 BingPreview/1.0b",
        "link_preview",
    ),
    (
        "DD facebookexternalhit",
        "click",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "link_preview",
    ),
    ("DD facebookplatform", "click", "facebookplatform/1.0 (+http://developers.facebook.com)", "link_preview"),
    ("CUA Facebot", "click", "Facebot/1.0", "link_preview"),
    ("arcjet/well-known-bots#36 (iMessage)", "click", IMESSAGE_UA, "link_preview"),
    ("CUA WhatsApp", "click", "WhatsApp/2.19.81 A", "link_preview"),
    ("CUA WhatsApp", "click", "WhatsApp/2.12.15/i", "link_preview"),
    ("CUA WhatsApp", "click", "WhatsApp", "link_preview"),
    ("CUA TelegramBot", "click", "TelegramBot (like TwitterBot)", "link_preview"),
    ("CUA Discordbot", "click", "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", "link_preview"),
    (
        "CUA LinkedInBot (embeds Jakarta HttpClient)",
        "click",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Jakarta Commons-HttpClient/3.1 +http://www.linkedin.com)",
        "link_preview",
    ),
    ("CUA Twitterbot", "click", "Twitterbot/1.0", "link_preview"),
    ("CUA Embedly", "click", "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)", "link_preview"),
    ("CUA Embedly", "click", "Embedly +support@embed.ly", "link_preview"),
    ("code corpus (preview fetcher test)", "click", "Iframely/1.3.1", "link_preview"),
    (
        "crawler-user-agents.json (FlipboardProxy)",
        "click",
        "Mozilla/5.0 (compatible; FlipboardProxy/1.2; +http://flipboard.com/browserproxy)",
        "link_preview",
    ),
    ("CUA Pinterest", "click", "Pinterest/0.2 (+http://www.pinterest.com/bot.html)", "link_preview"),
    (
        "CUA Pinterest",
        "click",
        "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)",
        "link_preview",
    ),
    (
        "CUA redditbot",
        "click",
        "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
        "link_preview",
    ),
    ("CUA vkShare", "click", "Mozilla/5.0 (compatible; vkShare; +http://vk.com/dev/Share)", "link_preview"),
    (
        "DD Snapchat proxy",
        "click",
        "AppEngine-Google; (+http://code.google.com/appengine; appid: s~snapchat-proxy)",
        "link_preview",
    ),
    (
        "CUA Google Web Preview",
        "click",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; Google Web Preview) Chrome/27.0.1453 Safari/537.36",
        "link_preview",
    ),
    (
        "DD Google+ snippet fetcher",
        "click",
        "Mozilla/5.0 (Windows NT 6.1; rv:6.0) Gecko/20110814 Firefox/6.0 Google (+https://developers.google.com/+/web/snippet/)",
        "link_preview",
    ),
    (
        "CUA Yahoo Link Preview",
        "click",
        "Mozilla/5.0 (compatible; Yahoo Link Preview; https://help.yahoo.com/kb/mail/yahoo-link-preview-SLN23615.html)",
        "link_preview",
    ),
    ("DD Yahoo LinkExpander", "click", "Yahoo:LinkExpander:Slingstone", "link_preview"),
    ("DD Quora", "click", "Quora Link Preview/1.0 (http://www.quora.com)", "link_preview"),
    ("CUA Mastodon", "click", "http.rb/2.2.2 (Mastodon/1.5.1; +https://example-masto-instance.org/)", "link_preview"),
    # declared_bot
    (
        "CUA Googlebot",
        "click",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "declared_bot",
    ),
    ("CUA Googlebot", "open", "Googlebot-Image/1.0", "declared_bot"),
    (
        "CUA Googlebot smartphone",
        "click",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/41.0.2272.96 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "declared_bot",
    ),
    ("CUA bingbot", "click", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "declared_bot"),
    ("CUA msnbot", "click", "msnbot/2.0b (+http://search.msn.com/msnbot.htm)", "declared_bot"),
    (
        "CUA Slurp",
        "click",
        "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
        "declared_bot",
    ),
    (
        "DD Baidu",
        "click",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "declared_bot",
    ),
    ("DD DuckDuckBot", "click", "DuckDuckBot/1.0; (+http://duckduckgo.com/duckduckbot.html)", "declared_bot"),
    ("DD Yandex", "click", "Mozilla/5.0 (compatible; YaDirectFetcher/1.0; +http://yandex.com/bots)", "declared_bot"),
    (
        "DD MJ12bot",
        "click",
        "Mozilla/5.0 (compatible; MJ12bot/v1.4.4; http://www.majestic12.co.uk/bot.php?+)",
        "declared_bot",
    ),
    (
        "CUA SemrushBot",
        "click",
        "Mozilla/5.0 (compatible; SemrushBot-SA/0.97; +http://www.semrush.com/bot.html)",
        "declared_bot",
    ),
    (
        "DD AhrefsBot-like (BLEXBot)",
        "click",
        "Mozilla/5.0 (compatible; BLEXBot/1.0; +http://webmeup-crawler.com/)",
        "declared_bot",
    ),
    (
        "CUA Applebot",
        "click",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_1) AppleWebKit/600.2.5 (KHTML, like Gecko) "
        "Version/8.0.2 Safari/600.2.5 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "declared_bot",
    ),
    (
        "code corpus (AI crawler list)",
        "click",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2)",
        "declared_bot",
    ),
    (
        "code corpus (AI crawler list)",
        "click",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0)",
        "declared_bot",
    ),
    (
        "code corpus (AI crawler list)",
        "click",
        "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
        "declared_bot",
    ),
    (
        "CUA 360Spider",
        "click",
        "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0); 360Spider",
        "declared_bot",
    ),
    ("CUA YisouSpider", "click", "YisouSpider", "declared_bot"),
    (
        "CUA Grapeshot",
        "click",
        "Mozilla/5.0 (compatible; GrapeshotCrawler/2.0; +http://www.grapeshot.co.uk/crawler.php)",
        "declared_bot",
    ),
    (
        "CUA archive.org",
        "click",
        "ia_archiver (+http://www.alexa.com/site/help/webmasters; crawler@alexa.com)",
        "declared_bot",
    ),
    ("CUA Mediapartners-Google", "click", "Mediapartners-Google", "declared_bot"),
    (
        "CUA APIs-Google",
        "click",
        "APIs-Google (+https://developers.google.com/webmasters/APIs-Google.html)",
        "declared_bot",
    ),
    (
        "DD Google Favicon",
        "open",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/49.0.2623.75 Safari/537.36 Google Favicon",
        "declared_bot",
    ),
    (
        "code corpus (headless test)",
        "click",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/129.0.0.0",
        "declared_bot",
    ),
    (
        "CUA PhantomJS",
        "click",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1 "
        "bl.uk_lddc_renderbot/2.0.0 (+ http://www.bl.uk/aboutus/legaldeposit/websites/websites/faqswebmaster/index.html)",
        "declared_bot",
    ),
    ("DD phantomas", "click", "phantomas/1.11.0 (PhantomJS/1.9.8; linux x64)", "declared_bot"),
    (
        "DD Lighthouse",
        "click",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5 Build/MRA58N) AppleWebKit/537.36(KHTML, like Gecko) "
        "Chrome/61.0.3116.0 Mobile Safari/537.36 Chrome-Lighthouse",
        "declared_bot",
    ),
    (
        "DD WebPageTest",
        "click",
        "Mozilla/5.0 (Linux; Android 6.0.1; Moto G (4) Build/MPJ24.139-64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/65.0.3325.146 Mobile Safari/537.36 PTST/180829.190838",
        "declared_bot",
    ),
    (
        "CUA UptimeRobot",
        "open",
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "declared_bot",
    ),
    ("CUA Pingdom", "open", "Mozilla/5.0 (compatible; pingbot/2.0; +http://www.pingdom.com/)", "declared_bot"),
    ("DD Pingdom", "open", "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", "declared_bot"),
    (
        "DD StatusCake",
        "open",
        "Mozilla/5.0 (Windows NT 6.2; WOW64) AppleWebKit/537.4 (KHTML, like Gecko) Chrome/98 Safari/537.4 (StatusCake)",
        "declared_bot",
    ),
    ("DD Site24x7", "open", "Site24x7", "declared_bot"),
    ("CUA check_http", "open", "check_http/v2.2.1 (nagios-plugins 2.2.1)", "declared_bot"),
    ("DD Datadog", "open", "Datadog Agent/5.10.1", "declared_bot"),
    (
        "DD Route 53",
        "open",
        "Amazon-Route53-Health-Check-Service (ref b0eb04d5-cb5e-40e7-839b-558e52fc3f0d; report http://amzn.to/1vsZADi)",
        "declared_bot",
    ),
    ("CUA CloudFront", "open", "Amazon CloudFront", "declared_bot"),
    ("DD Netcraft", "click", "Mozilla/5.0 (compatible; NetcraftSurveyAgent/1.0; +info@netcraft.com)", "declared_bot"),
    (
        "DD Let's Encrypt",
        "click",
        "Mozilla/5.0 (compatible; Let's Encrypt validation server; +https://www.letsencrypt.org)",
        "declared_bot",
    ),
    ("CUA Scrapy", "click", "Scrapy/1.0.3 (+http://scrapy.org)", "declared_bot"),
    (
        "CUA Nutch",
        "click",
        "NutchCVS/0.7.1 (Nutch; http://lucene.apache.org/nutch/bot.html; nutch-agent@lucene.apache.org)",
        "declared_bot",
    ),
    # http_library
    ("CUA Wget", "click", "Wget/1.20.3 (linux-gnu)", "http_library"),
    ("curl default UA", "click", "curl/8.4.0", "http_library"),
    ("CUA python-requests", "click", "python-requests/2.22.0", "http_library"),
    ("CUA Python-urllib", "click", "Python-urllib/3.7", "http_library"),
    ("code corpus (aiohttp)", "click", "Python/3.10 aiohttp/3.8.1", "http_library"),
    ("httpx default UA", "click", "python-httpx/0.28.1", "http_library"),
    ("CUA Go-http-client", "click", "Go-http-client/1.1", "http_library"),
    ("CUA Go-http-client", "open", "Go-http-client/2.0", "http_library"),
    ("CUA okhttp", "click", "okhttp/3.5.0", "http_library"),
    ("CUA Apache-HttpClient", "click", "Apache-HttpClient/4.5.2 (Java/1.8.0_151)", "http_library"),
    ("Java's URLConnection default", "click", "Java/1.8.0_151", "http_library"),
    ("JDK HttpClient default", "click", "Java-http-client/17.0.2", "http_library"),
    ("CUA libwww-perl", "click", "2Bone_LinkChecker/1.0 libwww-perl/6.03", "http_library"),
    ("DD munin", "open", "munin/2.0.30-1 (libwww-perl/6.15)", "http_library"),
    ("code corpus (bot test)", "click", "node-fetch/1.0", "http_library"),
    ("CUA axios", "click", "axios/0.19.0", "http_library"),
    ("undici default UA", "click", "undici", "http_library"),
    ("Net::HTTP default UA", "click", "Ruby", "http_library"),
    ("Faraday default UA", "click", "Faraday v2.7.4", "http_library"),
    ("Guzzle default UA", "click", "GuzzleHttp/7", "http_library"),
    ("Postman", "click", "PostmanRuntime/7.36.0", "http_library"),
    ("CUA AHC", "click", "AHC/2.0", "http_library"),
    ("code corpus (ESP bot list)", "click", "lua-resty-http/0.10 (Lua) ngx_lua/10019", "http_library"),
    ("CUA Jetty", "click", "Jetty/9.3.z-SNAPSHOT", "http_library"),
]

# (source, user agent): people on both kinds.
PEOPLE: list[tuple[str, str]] = [
    # Mail proxies that fetch because a reader opened the message.
    (
        "DD Gmail Image Proxy; RES 2.2",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    ),
    (
        "gshutler/useragent#33 (older proxy UA)",
        "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.0.7) Gecko/2009021910 Firefox/3.0.7 (via ggpht.com)",
    ),
    ("RES 2.3 YahooMailProxy", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"),
    ("DD Seznam Email Proxy", "Mozilla/5.0 SeznamEmailProxy/2.0.174"),
    (
        "DD UkrNet Mail Proxy",
        "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/55.0.2883.87 "
        "Safari/537.36 (via secureurl.fwdcdn.com - mail.ukr.net proxy)",
    ),
    ("DD RamblerMail Image Proxy", "RamblerMail/6.0 (incompatible; ImageProxy/6.0)"),
    # Mail apps.
    ("DD pim Yahoo Mail app", "Yahoo%20Mail/49268 CFNetwork/1121.2.2 Darwin/19.3.0"),
    ("code corpus (ua-parser-js email extension test)", "YahooMobile/1.0 (mail; 3.0.5.1311380)"),
    (
        "code corpus (email-client detector)",
        "YahooMobile/1.0 (mail; 3.0.5.1311380); (Linux; U; Android 4.0.3; htc_runnymede Build/ICE_CREAM_SANDWICH_MR1);",
    ),
    (
        "DD pim Yahoo! Mail iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 15_3_1 like Mac OS X) AppleWebKit/534.46 (KHTML, like Gecko) "
        "Mobile/9B176 YJApp-IOS jp.co.yahoo.ymail/7.4.1",
    ),
    (
        "DD pim Outlook 16",
        "Microsoft Office/16.0 (Microsoft Outlook 16.0.12329; Pro), Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    ),
    (
        "DD pim Outlook 14",
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; Win64; x64; Trident/7.0; .NET CLR 2.0.50727; SLCC2; "
        ".NET CLR 3.5.30729; .NET CLR 3.0.30729; Media Center PC 6.0; .NET4.0C; InfoPath.3; .NET CLR 1.1.4322; FDM; "
        "Tablet PC 2.0; .NET4.0E; Microsoft Outlook 14.0.7113; ms-office; MSOffice 14)",
    ),
    ("ISBOT Outlook", "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.7143; Pro)"),
    ("ISBOT Outlook Mail", "Microsoft Office/16.0 (Microsoft Outlook Mail 16.0.8008; Pro)"),
    (
        "code corpus (bot test that wrongly flags it)",
        "Mozilla/5.0 (Windows NT 10.0; Microsoft Outlook 16.0.1; ms-office; MSOffice 16)",
    ),
    ("DD pim MacOutlook", "MacOutlook/16.46.21021202 (Intelx64 Mac OS X 11.2.2 (Build 20D80))"),
    ("DD pim Outlook-iOS", "Outlook-iOS/709.2042344.prod.iphone (3.21.0)"),
    ("ISBOT Outlook-iOS", "Outlook-iOS/709.2189947.prod.iphone (3.24.0)"),
    ("brief (Outlook for Android)", "Outlook-Android/2.2.0"),
    ("DD pim Outlook macOS", "Outlook/16.16.18071205 CFNetwork/902.1 Darwin/17.7.0 (x86_64)"),
    ("DD pim Windows Mail", "WindowsMail/17.5.9600.22013"),
    (
        "brief (Windows Live Mail)",
        "Outlook-Express/7.0 (MSIE 7.0; Windows NT 6.1; Trident/7.0; Microsoft Windows Live Mail 15.4)",
    ),
    (
        "uap-core#528; RES 2.1 (genuine Apple Mail macOS)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    ),
    (
        "ISBOT Webkit (Apple Mail)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    ),
    (
        "brief (iOS Mail)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ),
    (
        "ISBOT Webkit (iOS Mail)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ),
    (
        "DD pim Thunderbird",
        "Mozilla/5.0 (X11; Linux x86_64; rv:24.0) Gecko/20100101 Thunderbird/24.4.0 Lightning/2.6.4",
    ),
    (
        "ISBOT Thunderbird",
        "Mozilla/5.0 (Windows NT 10.0; WOW64; rv:60.0) Gecko/20100101 Thunderbird/60.7.0 Lightning/6.2.7",
    ),
    ("DD pim Airmail", "Airmail 1.4 rv:238 (Macintosh; Mac OS X 10.9.2; hr_HR)"),
    ("DD pim eM Client", "eMClient/9.3.6041.0"),
    ("DD pim NAVER Mail", "NaverMailApp/2.2.2 (Android 10; SM-G986N)"),
    ("DD pim DAVdroid (okhttp inside an app UA)", "DAVdroid/1.6.2-ose (2017/06/23; dav4android; okhttp3) Android/7.0"),
    (
        "DD pim Mail Master",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 11_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15F79 MailMaster/6.5.3.1210",
    ),
    ("ISBOT Lynx (libwww-FM, not libwww-perl)", "Lynx/2.8.9rel.1 libwww-FM/2.14 SSL-MM/1.4.1 GNUTLS/3.6.5"),
    # Browsers, WebViews (the Gmail app, Samsung Email and other Android mail apps render in them).
    (
        "ISBOT Chrome",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.169 Safari/537.36",
    ),
    (
        "ISBOT Chrome (old)",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.1 (KHTML, like Gecko) Chrome/21.0.1180.83 Safari/537.1",
    ),
    (
        "gophish#973 (Safe Links, but by UA a browser)",
        "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/57.0.2987.133 Safari/537.36",
    ),
    (
        "ISBOT Android WebView",
        "Mozilla/5.0 (Linux; Android 5.1.1; Nexus 5 Build/LMY48B; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/43.0.2357.65 Mobile Safari/537.36",
    ),
    (
        "ISBOT WebView (Google app)",
        "Mozilla/5.0 (Linux; Android 6.0.1; SM-G532M Build/MMB29T; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/88.0.4324.181 Mobile Safari/537.36 GoogleApp/12.4.9.23.arm",
    ),
    ("ISBOT Firefox", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:100.0) Gecko/20100101 Firefox/100.0"),
    (
        "ISBOT Firefox (old)",
        "Mozilla/5.0 (Windows; U; Windows NT 5.1; en-US; rv:1.8.0.8) Gecko/20061025 Firefox/1.5.0.8",
    ),
    (
        "ISBOT Safari iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_2_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.3 Mobile/15E148 Safari/604.1",
    ),
    (
        "ISBOT Safari macOS",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.1 Safari/605.1.15",
    ),
    (
        "ISBOT Internet Explorer",
        "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0; .NET CLR 2.0.50727; .NET CLR 3.0.4506.2152; .NET CLR 3.5.30729)",
    ),
    ("ISBOT IE 11", "Mozilla/5.0 (Windows NT 6.3; WOW64; Trident/7.0; TNJB; rv:11.0) like Gecko"),
    (
        "ISBOT Edge (Chromium)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.113 Safari/537.36 Edg/81.0.416.62",
    ),
    (
        "gshutler/useragent#16 (genuine Edge 12, the Gmail prefetch UA without its tail)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/42.0.2311.135 Safari/537.36 Edge/12.246",
    ),
    (
        "ISBOT Edge iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 EdgiOS/44.10.19 Mobile/15E148 Safari/605.1.15",
    ),
    (
        "ISBOT Opera",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_12_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.130 Safari/537.36 OPR/66.0.3515.72",
    ),
    ("ISBOT Opera Mini", "Opera/9.80 (Android; Opera Mini/12.0.1987/37.7327; U; pl) Presto/2.12.423 Version/12.16"),
    (
        "ISBOT Samsung Internet",
        "Mozilla/5.0 (Linux; Android 9; SAMSUNG SM-G960U) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/10.2 Chrome/71.0.3578.99 Mobile Safari/537.36",
    ),
    (
        "ISBOT Yandex Browser",
        "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/59.0.3071.125 YaBrowser/17.7.1.791 Yowser/2.5 Safari/537.36",
    ),
    (
        "ISBOT UC Browser",
        "Mozilla/5.0 (Linux; U; Android 4.4.2; zh-CN; HUAWEI MT7-TL00 Build/HuaweiMT7-TL00) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/40.0.2214.89 UCBrowser/11.3.8.909 Mobile Safari/537.36",
    ),
    (
        "ISBOT DuckDuckGo",
        "Mozilla/5.0 (Linux; Android 10) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/84.0.4147.111 Mobile DuckDuckGo/5 Safari/537.36",
    ),
    (
        "ISBOT DuckDuckGo iOS",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 DuckDuckGo/7",
    ),
    (
        "ISBOT Brave",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Brave Chrome/80.0.3987.132 Safari/537.36",
    ),
    (
        "ISBOT Vivaldi",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/65.0.3325.183 Safari/537.36 Vivaldi/1.96.1137.3",
    ),
    (
        "ISBOT HuaweiBrowser",
        "Mozilla/5.0 (Linux; Android 10; MAR-LX3A; HMSCore 6.12.4.311; GMSCore 23.48.16) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/99.0.4844.88 HuaweiBrowser/14.0.2.311 Mobile Safari/537.36",
    ),
    (
        "ISBOT Miui",
        "Mozilla/5.0 (Linux; U; Android 9; pl-pl; Redmi Note 7 Build/PKQ1.180904.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/71.0.3578.141 Mobile Safari/537.36 XiaoMi/MiuiBrowser/11.4.3-g",
    ),
    (
        "ISBOT Chrome OS",
        "Mozilla/5.0 (X11; CrOS x86_64 13904.66.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.114 Safari/537.36",
    ),
    ("ISBOT Tor Browser", "Mozilla/5.0 (Android 9; Mobile; rv:78.0) Gecko/78.0 Firefox/78.0"),
    (
        "ISBOT Puffin",
        "Mozilla/5.0 (X11; U; Linux x86_64; en-US) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/30.0.1599.114 Safari/537.36 Puffin/5.2.2IT",
    ),
    # In-app browsers.
    (
        "ISBOT Instagram",
        "Mozilla/5.0 (Linux; Android 11; Pixel 2 Build/RP1A.201005.004.A1; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/91.0.4472.120 Mobile Safari/537.36 Instagram 194.0.0.36.172 Android (30/11; 420dpi; "
        "1080x1878; Google/google; Pixel 2; walleye; walleye; en_US; 301484483)",
    ),
    (
        "ISBOT Facebook App",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 11_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15G77 "
        "[FBAN/FBIOS;FBAV/183.0.0.41.81;FBBV/119182652;FBDV/iPhone6,2;FBMD/iPhone;FBSN/iOS;FBSV/11.4.1;FBSS/2;FBCR/VIVO;"
        "FBID/phone;FBLC/pt_BR;FBOP/5;FBRV/0]",
    ),
    (
        "ISBOT Facebook App (Android)",
        "Mozilla/5.0 (Linux; Android 9; SM-G950U Build/PPR1.180610.011; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/80.0.3987.149 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/263.0.0.46.121;]",
    ),
    (
        "ISBOT WeChat",
        "Mozilla/5.0 (Linux; Android 7.0; FRD-AL00 Build/HUAWEIFRD-AL00; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/53.0.2785.49 Mobile MQQBrowser/6.2 TBS/043602 Safari/537.36 MicroMessenger/6.5.16.1120 "
        "NetType/WIFI Language/zh_CN",
    ),
    (
        "ISBOT Snapchat in-app browser",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 14_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.1 "
        "Mobile/15E148 Snapchat/11.36.0.36 (like Safari/604.1)",
    ),
    (
        "ISBOT Viber in-app browser",
        "Mozilla/5.0 (Linux; Android 7.1.2; G011A Build/N2G48H; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
        "Chrome/66.0.3359.158 Safari/537.36 Viber/11.9.5.8",
    ),
    ("ISBOT Viber", "Viber/12.8.0.1 CFNetwork/1121.2.2 Darwin/19.3.0"),
    (
        "ISBOT Pinterest App",
        "Mozilla/5.0 (iPad; CPU OS 6_1_3 like Mac OS X) AppleWebKit/536.26 (KHTML, like Gecko) Mobile/10B329 [Pinterest/iOS]",
    ),
    (
        "ISBOT Twitter App",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/17D50 Twitter for iPhone/8.10",
    ),
    (
        "ISBOT LinkedIn App",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [LinkedInApp]",
    ),
    (
        "ISBOT Electron (Slack desktop)",
        "Mozilla/5.0 (Windows NT 10.0.18362; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.4.2 "
        "Chrome/78.0.3904.130 Electron/7.2.1 Safari/537.36 WindowsStore/10.0.18362 Sonic Slack_SSB/4.4.2",
    ),
    (
        "ISBOT Electron (Discord desktop)",
        "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) discord/0.0.306 Chrome/78.0.3904.130 "
        "Electron/7.1.11 Safari/537.36",
    ),
    (
        "ISBOT Google Search App",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/102.0.304944559 Mobile/15E148 Safari/604.1",
    ),
    ("ISBOT Android (Dalvik)", "Dalvik/2.1.0 (Linux; U; Android 9; SM-G965U Build/PPR1.180610.011)"),
    ("ISBOT RadiosNet (Java inside an app UA)", "RadiosNet/2.1.1 (Java; Android)"),
    # Substring traps.
    (
        "ISBOT Cubot",
        "Mozilla/5.0 (Linux; Android 6.0; CUBOT MAX) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0.3626.121 Mobile Safari/537.36",
    ),
    (
        "ISBOT Cubot",
        "Mozilla/5.0 (Linux; Android 8.0.0; CUBOT_P20) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Mobile Safari/537.36",
    ),
    (
        "ISBOT Cubot (Opera)",
        "Mozilla/5.0 (Linux; Android 4.2.2; CUBOT C11 Build/JDQ39) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/31.0.1650.57 Mobile Safari/537.36 OPR/18.0.1290.66961",
    ),
    ("code corpus (CUBOT_NOTE_S test)", "Mozilla/5.0 (Linux; Android 9; CUBOT_NOTE_S) AppleWebKit/537.36 Chrome/78"),
    (
        "ISBOT Huawei",
        "Mozilla/5.0 (Linux; Android 7.0; BLL-L22 Build/HUAWEIBLL-L22) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/55.0.2883.91 Mobile Safari/537.36",
    ),
    (
        "ISBOT Nokia",
        "Mozilla/5.0 (Linux; Android 9; Nokia 7 plus) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.157 Mobile Safari/537.36 Brave/74",
    ),
]


@pytest.mark.parametrize(("source", "kind", "ua", "expected"), MACHINES, ids=[f"{m[0]}|{m[2][:40]}" for m in MACHINES])
def test_machine_user_agents(source: str, kind: str, ua: str, expected: str) -> None:
    assert agent_reasons(kind, ua) == (expected,), source


@pytest.mark.parametrize(("source", "ua"), PEOPLE, ids=[f"{p[0]}|{p[1][:40]}" for p in PEOPLE])
@pytest.mark.parametrize("kind", ["open", "click"])
def test_people_user_agents(source: str, ua: str, kind: str) -> None:
    assert agent_reasons(kind, ua) == (), source


def test_missing_user_agent() -> None:
    assert agent_reasons("open", None) == ("no_user_agent",)
    assert agent_reasons("click", None) == ("no_user_agent",)


def test_outlook_on_an_open_is_a_person_but_office_probing_a_link_is_not() -> None:
    # isbot files `Mozilla/4.0 (compatible; ms-office; MSOffice 16)` under Outlook: on the pixel it
    # is Outlook rendering the mail; on a click, Word/Excel/PowerPoint fetching a link themselves.
    ua = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
    assert agent_reasons("open", ua) == ()
    assert agent_reasons("click", ua) == ("office_discovery",)


def test_mpp_is_exact_and_surrounding_space_is_ignored() -> None:
    assert agent_reasons("open", " Mozilla/5.0 ") == ("apple_mpp",)
    assert agent_reasons("open", "Mozilla/5.0 (compatible)") == ()


def test_many_samples() -> None:
    assert len(MACHINES) + len(PEOPLE) >= 120


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1024))
def test_any_text_gives_a_tuple_of_known_codes(ua: str) -> None:
    for kind in ("open", "click"):
        reasons = agent_reasons(kind, ua)
        assert isinstance(reasons, tuple)
        assert len(reasons) <= 1
        assert set(reasons) <= REASON_CODES
